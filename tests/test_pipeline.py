import jax
import numpy as np
import pytest

from jaxcap import training
from jaxcap.data import pipeline, text
from jaxcap.model import decoders

CAPTIONS = [["a red circle"], ["a blue square left of a green triangle", "x"],
            ["a yellow circle above a red square"], ["a green square"], ["a blue circle"]]


def make_set(all_captions=False, n_images=5, dim=6):
  vocab = text.Vocabulary.build([c for cs in CAPTIONS for c in cs], 50)
  feats = np.random.default_rng(0).normal(size=(n_images, 3, dim)).astype(np.float16)
  return vocab, pipeline.make_caption_set(feats, CAPTIONS, vocab, 16, all_captions)


def test_first_caption_or_all_captions():
  _, first = make_set()
  assert len(first) == 5 and first.captions[1] == CAPTIONS[1][0]
  assert first.references[1] == CAPTIONS[1]
  _, every = make_set(all_captions=True)
  assert len(every) == 6 and list(every.image_index) == [0, 1, 1, 2, 3, 4]
  np.testing.assert_array_equal(every.features_of(np.array([1, 2])),
                                every.features[[1, 1]].astype(np.float32))


def test_train_batches_are_a_function_of_seed_and_step():
  _, data = make_set()
  a = pipeline.train_batch(data, 2, seed=3, step=5)
  b = pipeline.train_batch(data, 2, seed=3, step=5)
  c = pipeline.train_batch(data, 2, seed=4, step=5)
  np.testing.assert_array_equal(a[1], b[1])
  assert a[0].dtype == np.float32
  # One epoch (drop remainder: 2 batches of 2) covers distinct examples.
  rows = np.concatenate([pipeline.train_batch(data, 2, 3, s)[1] for s in range(2)])
  assert len({r.tobytes() for r in rows}) == 4
  assert not np.array_equal(a[1], c[1]) or not np.array_equal(
      pipeline.train_batch(data, 2, 3, 6)[1], pipeline.train_batch(data, 2, 4, 6)[1])


@pytest.mark.slow
def test_bucket_trimming_keeps_the_loss():
  vocab, data = make_set()
  tokens = data.tokens
  trimmed = pipeline.trim_to_bucket(tokens, (4, 10, 12))
  longest = int((tokens != 0).sum(1).max())
  assert trimmed.shape[1] == 10 and longest <= 10
  assert pipeline.trim_to_bucket(tokens, ()).shape[1] == 16
  spec = decoders.DecoderSpec("gru", vocab_size=len(vocab), units=8, feature_dim=6)
  params = decoders.init(jax.random.key(0), spec)
  feats = data.features_of(np.arange(5))
  np.testing.assert_allclose(training.loss(params, spec, feats, trimmed),
                             training.loss(params, spec, feats, tokens), rtol=1e-6)


def test_eval_batches_pad_with_empty_captions():
  _, data = make_set()
  batches = list(pipeline.eval_batches(data, 4))
  assert [b[1].shape[0] for b in batches] == [4, 4]
  assert (batches[1][1][1:] == 0).all()
  assert sum(int((t != 0).sum()) for _, t in batches) == int((data.tokens != 0).sum())
