"""The feature cache: killed halfway, it resumes; nothing half-written is ever read."""

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np

from jaxcap import decoders, text, training
from jaxcap.data import cache, pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A split of 40 generated images (image 7 unreadable) and a toy frozen encoder.
SETUP = textwrap.dedent("""
    import os, signal, sys
    import jax, numpy as np
    from jaxcap import images
    from jaxcap.data import cache, pipeline
    W = np.random.default_rng(0).normal(size=(3, 6)).astype(np.float32)
    feature_fn = jax.jit(lambda x: x.reshape(x.shape[0], 4, -1, 3).mean(2) @ W)  # (B, 4, 6)
    KILL_AFTER = int(os.environ.get("KILL_AFTER", "-1"))
    loads = [0]

    def load(i):
      loads[0] += 1
      if loads[0] == KILL_AFTER:
        os.kill(os.getpid(), signal.SIGKILL)
      if i == 7:
        raise images.ImageError("image 7: unreadable")
      return np.full((8, 8, 3), i / 40, np.float32) + np.linspace(0, 0.01, 192).reshape(8, 8, 3)

    split = pipeline.Split("train", [f"img{i}" for i in range(40)],
                           [[f"caption {i}"] for i in range(40)], load)
""")
RUN = SETUP + textwrap.dedent("""
    feats, kept = cache.encode_cached(split, feature_fn, batch_size=4, cache_root=sys.argv[1],
                                      encoder_name="toy", image_size=8)
    print("LOADS", loads[0], "KEPT", len(kept))
""")


def run(root, kill_after=-1):
  return subprocess.run([sys.executable, "-c", RUN, str(root)], cwd=ROOT, text=True,
                        capture_output=True, env=dict(os.environ, KILL_AFTER=str(kill_after)),
                        timeout=300)


def reference():
  namespace = {}
  exec(SETUP, namespace)  # pylint: disable=exec-used
  return namespace, pipeline.encode_images(namespace["split"], namespace["feature_fn"],
                                           batch_size=4)


def test_killed_halfway_then_completed(tmp_path):
  killed = run(tmp_path, kill_after=23)
  assert killed.returncode == -9
  namespace, (expected, expected_kept) = reference()
  folder = cache.cache_folder(str(tmp_path), namespace["split"], "toy", 8)
  valid = np.load(os.path.join(folder, "valid.npy"))
  assert 0 < valid.sum() < 39  # some rows done, not all

  done = run(tmp_path)
  assert done.returncode == 0, done.stderr
  loads = int(done.stdout.split()[1])
  assert loads == 40 - valid.sum()  # only the missing rows were computed again
  assert "KEPT 39" in done.stdout
  features = np.load(os.path.join(folder, "features.npy"))
  valid = np.load(os.path.join(folder, "valid.npy"))
  assert valid.sum() == 39 and valid[7] == 0
  np.testing.assert_allclose(features[expected_kept], expected[expected_kept], atol=2e-3)

  again = run(tmp_path)
  assert "LOADS 1 " in again.stdout  # everything cached; only the unreadable one is retried


def test_written_but_unmarked_row_is_recomputed(tmp_path):
  namespace, (expected, kept) = reference()
  split, fn = namespace["split"], namespace["feature_fn"]
  cache.encode_cached(split, fn, batch_size=4, cache_root=str(tmp_path), encoder_name="toy",
                      image_size=8)
  folder = cache.cache_folder(str(tmp_path), split, "toy", 8)
  features = np.lib.format.open_memmap(os.path.join(folder, "features.npy"), "r+")
  valid = np.lib.format.open_memmap(os.path.join(folder, "valid.npy"), "r+")
  features[3] = 123.0  # a torn write: data changed, mark cleared
  valid[3] = 0
  features.flush()
  valid.flush()
  del features, valid
  got, _ = cache.encode_cached(split, fn, batch_size=4, cache_root=str(tmp_path),
                               encoder_name="toy", image_size=8)
  np.testing.assert_allclose(got[3], expected[3], atol=2e-3)


def test_training_loss_same_from_cache(tmp_path):
  namespace, (expected, kept) = reference()
  split, fn = namespace["split"], namespace["feature_fn"]
  cached, cached_kept = cache.encode_cached(split, fn, batch_size=4, cache_root=str(tmp_path),
                                            encoder_name="toy", image_size=8)
  np.testing.assert_array_equal(cached_kept, kept)
  vocab = text.Vocabulary.build([c for caps in split.captions for c in caps], 100)
  captions = [split.captions[i] for i in kept]
  a = pipeline.make_caption_set(cached, captions, vocab, 6, False, image_rows=kept)
  b = pipeline.make_caption_set(expected, captions, vocab, 6, False, image_rows=kept)
  spec = decoders.DecoderSpec("gru", vocab_size=len(vocab), units=8, feature_dim=6)
  params = decoders.init(jax.random.key(0), spec)
  rows = np.arange(len(a))
  # Both store float16; the direct path as computed by the encoder in float32:
  direct = np.asarray(fn(np.stack([split.load(i) for i in kept])))
  loss_cached = training.loss(params, spec, a.features_of(rows), a.tokens)
  loss_direct = training.loss(params, spec, direct, b.tokens)
  np.testing.assert_allclose(loss_cached, loss_direct, rtol=1e-3)
