"""jaxcap.training's pieces. The loss and Adam against the seed's Keras model are in
test_keras_parity.py, the data-parallel step in test_data_parallel.py, bfloat16 in
test_mixed_precision.py."""

import keras
import numpy as np
import pytest

from jaxcap import training


def test_shift_targets():
  tokens = np.array([[3, 7, 8, 4, 0, 0], [3, 9, 4, 0, 0, 0]])
  np.testing.assert_array_equal(training.shift_targets(tokens),
                                [[7, 8, 4, 0, 0, 0], [9, 4, 0, 0, 0, 0]])


def test_masked_loss_terms_equal_keras_over_real_tokens():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 5, 11)).astype(np.float32)
  targets = np.array([[4, 2, 7, 0, 0], [1, 9, 0, 0, 0]])
  total, count = training.masked_loss_terms(logits, targets)
  real = targets != 0
  per_token = keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)
  assert float(count) == real.sum()
  np.testing.assert_allclose(float(total), np.asarray(per_token)[real].sum(), rtol=1e-5)
  # What the logits say at padding does not count.
  logits[~real] = 100 * rng.normal(size=logits[~real].shape)
  np.testing.assert_allclose(float(training.masked_loss_terms(logits, targets)[0]), float(total),
                             rtol=1e-6)


def test_learning_rate_schedules():
  assert training.learning_rate_schedule(1e-3, "constant", 100) == 1e-3
  cosine = training.learning_rate_schedule(1e-3, "cosine", 100)
  np.testing.assert_allclose([float(cosine(s)) for s in (0, 50, 100, 200)],
                             [1e-3, 5e-4, 0.0, 0.0], atol=1e-9)
  with pytest.raises(ValueError, match="unknown learning-rate schedule"):
    training.learning_rate_schedule(1e-3, "linear", 100)


def test_shard_splits_the_batch_in_order():
  batch = np.arange(12).reshape(6, 2)
  sharded = training.shard(batch, 3)
  assert sharded.shape == (3, 2, 2)
  np.testing.assert_array_equal(sharded.reshape(6, 2), batch)
  np.testing.assert_array_equal(sharded[1], batch[2:4])
  with pytest.raises(ValueError, match="multiple of the device count"):
    training.shard(batch, 4)
