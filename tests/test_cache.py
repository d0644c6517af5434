"""The feature cache: killed halfway, it resumes; nothing half-written, stale or built by
another encoder is ever read."""

import errno
import logging
import os
import subprocess
import sys
import textwrap

import jax
import ml_collections
import numpy as np
import PIL.Image
import pytest

from jaxcap import training
from jaxcap.data import cache, pipeline, sources, text
from jaxcap.data.build import split_features
from jaxcap.model import decoders

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A split of 40 generated images (image 7 unreadable) and a toy frozen encoder.
SETUP = textwrap.dedent("""
    import os, signal, sys
    import jax, numpy as np
    from jaxcap.data import image_files
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
        raise image_files.ImageError("image 7: unreadable")
      return np.full((8, 8, 3), i / 40, np.float32) + np.linspace(0, 0.01, 192).reshape(8, 8, 3)

    split = pipeline.Split("train", [f"img{i}" for i in range(40)],
                           [[f"caption {i}"] for i in range(40)], load)
""")
RUN = SETUP + textwrap.dedent("""
    # Fault injection at a fixed point: SIGKILL at the CRASH_AT-th batch, after its features
    # and stamps are flushed and before its valid marks are.
    CRASH_AT = int(os.environ.get("CRASH_AT", "-1"))
    writes = [0]

    def crash_point(where):
      writes[0] += 1
      if writes[0] == CRASH_AT:
        os.kill(os.getpid(), signal.SIGKILL)

    cache._crash_point = crash_point
    feats, kept = cache.extract_features_cached(split, feature_fn, batch_size=4,
                                                cache_root=sys.argv[1],
                                                description={"name": "toy", "image_size": 8})
    print("LOADS", loads[0], "KEPT", len(kept))
""")
TOY = {"name": "toy", "image_size": 8}


def run(root, kill_after=-1, crash_at=-1):
  return subprocess.run([sys.executable, "-c", RUN, str(root)], cwd=ROOT, text=True,
                        capture_output=True, timeout=300,
                        env=dict(os.environ, KILL_AFTER=str(kill_after), CRASH_AT=str(crash_at)))


def reference():
  namespace = {}
  exec(SETUP, namespace)  # pylint: disable=exec-used
  return namespace, pipeline.extract_features(namespace["split"], namespace["feature_fn"],
                                              batch_size=4)


@pytest.mark.slow
def test_killed_halfway_then_completed(tmp_path):
  killed = run(tmp_path, kill_after=23)
  assert killed.returncode == -9
  namespace, (expected, expected_kept) = reference()
  folder = cache.cache_folder(str(tmp_path), namespace["split"], TOY)
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
  cache.extract_features_cached(split, fn, batch_size=4, cache_root=str(tmp_path), description=TOY)
  folder = cache.cache_folder(str(tmp_path), split, TOY)
  features = np.lib.format.open_memmap(os.path.join(folder, "features.npy"), "r+")
  valid = np.lib.format.open_memmap(os.path.join(folder, "valid.npy"), "r+")
  features[3] = 123.0  # a torn write: data changed, mark cleared
  valid[3] = 0
  features.flush()
  valid.flush()
  del features, valid
  got, _ = cache.extract_features_cached(split, fn, batch_size=4, cache_root=str(tmp_path),
                                         description=TOY)
  np.testing.assert_allclose(got[3], expected[3], atol=2e-3)


@pytest.mark.slow
def test_training_loss_same_from_cache(tmp_path):
  namespace, (expected, kept) = reference()
  split, fn = namespace["split"], namespace["feature_fn"]
  cached, cached_kept = cache.extract_features_cached(
      split, fn, batch_size=4, cache_root=str(tmp_path), description=TOY)
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


@pytest.mark.slow
def test_killed_between_data_flush_and_valid_flush(tmp_path):
  killed = run(tmp_path, crash_at=3)  # batches 1 and 2 marked, batch 3 written, not marked
  assert killed.returncode == -9, killed.stderr
  namespace, (expected, expected_kept) = reference()
  folder = cache.cache_folder(str(tmp_path), namespace["split"], TOY)
  valid = np.load(os.path.join(folder, "valid.npy"))
  features = np.load(os.path.join(folder, "features.npy"))
  assert list(np.flatnonzero(valid)) == [0, 1, 2, 3, 4, 5, 6, 8]  # image 7 is unreadable
  assert np.abs(features[9:13]).min() > 0  # batch 3's data reached the disk ...
  done = run(tmp_path)  # ... but, unmarked, it is computed again
  assert done.returncode == 0, done.stderr
  assert "LOADS 32 KEPT 39" in done.stdout
  features = np.load(os.path.join(folder, "features.npy"))
  np.testing.assert_allclose(features[expected_kept], expected[expected_kept], atol=2e-3)


def test_truncated_features_file_is_rebuilt(tmp_path, caplog):
  namespace, (expected, kept) = reference()
  split, fn = namespace["split"], namespace["feature_fn"]
  cache.extract_features_cached(split, fn, batch_size=4, cache_root=str(tmp_path), description=TOY)
  path = os.path.join(cache.cache_folder(str(tmp_path), split, TOY), "features.npy")
  os.truncate(path, os.path.getsize(path) // 2)
  with caplog.at_level(logging.WARNING):
    got, got_kept = cache.extract_features_cached(
        split, fn, batch_size=4, cache_root=str(tmp_path), description=TOY)
  assert path in caplog.text and "rebuilding" in caplog.text
  np.testing.assert_array_equal(got_kept, kept)
  np.testing.assert_allclose(got[kept], expected[kept], atol=2e-3)


def test_full_disk_names_the_cache_file(tmp_path, monkeypatch):
  def no_space(fd, offset, length):
    raise OSError(errno.ENOSPC, "No space left on device")
  monkeypatch.setattr(os, "posix_fallocate", no_space)
  namespace, _ = reference()
  with pytest.raises(OSError, match=r"no space left on device writing the feature cache "
                     r"\(0.00 GB; data.cache_dir chooses where\) \(.*features.npy\)"):
    cache.extract_features_cached(namespace["split"], namespace["feature_fn"], batch_size=4,
                                  cache_root=str(tmp_path), description=TOY)
  assert not list(tmp_path.rglob("*.npy"))  # nothing left that looks like a cache


# Real image files and the entry point that train.py and evaluate.py use.
def write_png(path, value):
  pixels = np.full((8, 8, 3), value, np.uint8)
  pixels[::2, ::2] = 255 - value  # content that changes the PNG's size with the value
  PIL.Image.fromarray(pixels).save(path)


def file_config(tmp_path, **encoder):
  weights = tmp_path / "weights.bin"
  if not weights.exists():
    weights.write_bytes(b"weights 1")
  config = ml_collections.ConfigDict({
      "data": {"cache": True, "cache_dir": str(tmp_path / "cache")},
      "encoder": {"name": "mobilenet_v2", "weights": str(weights), "image_size": 8,
                  "batch_size": 4}})
  config.encoder.update(encoder)
  return config


def file_split(tmp_path, count=6):
  paths = [str(tmp_path / f"img{i}.png") for i in range(count)]
  for i, path in enumerate(paths):
    if not os.path.exists(path):
      write_png(path, 20 * i)
  return sources.file_splits({"train": [(p, ["a caption"]) for p in paths]}, 8,
                             "pil_bilinear")["train"]


def mean_colour(images):  # a toy encoder: (B, 8, 8, 3) -> (B, 1, 3)
  return jax.numpy.mean(images, axis=(1, 2))[:, None, :]


def counting(fn):
  calls = []
  def wrapped(images):
    calls.append(len(images))
    return fn(images)
  return wrapped, calls


def test_changed_image_file_is_recomputed(tmp_path):
  split = file_split(tmp_path)
  before, _ = split_features(file_config(tmp_path), split, mean_colour, str(tmp_path))
  before = np.array(before)
  stat = os.stat(split.keys[2])
  write_png(split.keys[2], 200)  # another picture at the same path
  os.utime(split.keys[2], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
  fn, calls = counting(mean_colour)
  after, _ = split_features(file_config(tmp_path), split, fn, str(tmp_path))
  assert calls == [4]  # one batch: image 2 alone, padded
  expected = mean_colour(split.load(2)[None])[0]
  np.testing.assert_allclose(after[2], expected, atol=2e-3)
  assert np.abs(after[2] - before[2]).max() > 0.1
  np.testing.assert_array_equal(np.delete(np.asarray(after), 2, 0), np.delete(before, 2, 0))


def test_same_size_new_mtime_is_recomputed(tmp_path):
  split = file_split(tmp_path)
  split_features(file_config(tmp_path), split, mean_colour, str(tmp_path))
  os.utime(split.keys[4], ns=(0, 12345))
  fn, calls = counting(mean_colour)
  split_features(file_config(tmp_path), split, fn, str(tmp_path))
  assert len(calls) == 1
  fn, calls = counting(mean_colour)
  split_features(file_config(tmp_path), split, fn, str(tmp_path))
  assert calls == []  # the new stamp was stored


@pytest.mark.parametrize("change", ["weights", "resize", "image_size"])
def test_cache_of_another_encoder_setting_is_never_read(tmp_path, change):
  split = file_split(tmp_path)
  split_features(file_config(tmp_path), split, mean_colour, str(tmp_path))
  if change == "weights":  # same path, other content
    (tmp_path / "weights.bin").write_bytes(b"other weights")
    config = file_config(tmp_path)
  elif change == "resize":
    config = file_config(tmp_path, resize="tf_bilinear")
  else:
    config = file_config(tmp_path, image_size=16)
  other = lambda images: mean_colour(images) + 1.0  # what another encoder would compute
  got, _ = split_features(config, split, other, str(tmp_path))
  np.testing.assert_allclose(got[0], other(split.load(0)[None])[0], atol=2e-3)


def test_batch_size_does_not_rebuild(tmp_path):
  split = file_split(tmp_path)
  split_features(file_config(tmp_path), split, mean_colour, str(tmp_path))
  fn, calls = counting(mean_colour)
  split_features(file_config(tmp_path, batch_size=2), split, fn, str(tmp_path))
  assert calls == []
