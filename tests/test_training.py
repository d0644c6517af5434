"""jaxcap.training's pieces. The loss and Adam against the seed's Keras model are in
test_keras_parity.py, the data-parallel step in test_data_parallel.py, bfloat16 in
test_mixed_precision.py."""

import numpy as np
import pytest

from jaxcap import training


def test_shift_targets():
  tokens = np.array([[3, 7, 8, 4, 0, 0], [3, 9, 4, 0, 0, 0]])
  np.testing.assert_array_equal(training.shift_targets(tokens),
                                [[7, 8, 4, 0, 0, 0], [9, 4, 0, 0, 0, 0]])


def test_learning_rate_schedules():
  assert training.learning_rate_schedule(1e-3, "constant", 100) == 1e-3
  cosine = training.learning_rate_schedule(1e-3, "cosine", 100)
  np.testing.assert_allclose([float(cosine(s)) for s in (0, 50, 100, 200)],
                             [1e-3, 5e-4, 0.0, 0.0], atol=1e-9)
  with pytest.raises(ValueError, match="unknown learning-rate schedule"):
    training.learning_rate_schedule(1e-3, "linear", 100)


def test_global_batch_splits_the_rows_in_order():
  import jax  # pylint: disable=g-import-not-at-top

  from jaxcap.training import parallel  # pylint: disable=g-import-not-at-top
  mesh = parallel.data_mesh()
  batch = np.arange(12 * jax.device_count()).reshape(-1, 2)
  placed = parallel.global_batch({"x": batch}, mesh)["x"]
  assert placed.shape == batch.shape and placed.sharding.spec == parallel.batch_sharding(mesh).spec
  np.testing.assert_array_equal(parallel.process_rows(placed), batch)
  if jax.device_count() > 1:
    with pytest.raises(ValueError, match="multiple of the device count"):
      parallel.global_batch(batch[:-1], mesh)


def test_train_step_takes_host_arrays_and_gives_floats():
  """The research-facing pair: numpy in, floats out, the state replicated on the mesh."""
  import jax  # pylint: disable=g-import-not-at-top

  from jaxcap.model import decoders  # pylint: disable=g-import-not-at-top
  spec = decoders.DecoderSpec("gru", vocab_size=23, units=8, feature_dim=6)
  optimizer = training.keras_adam(1e-2)
  rng = np.random.default_rng(0)
  features = rng.normal(size=(4, 3, 6)).astype(np.float32)
  tokens = rng.integers(2, 23, size=(4, 7)).astype(np.int32)
  tokens[:, 5:] = 0
  state = training.init_train_state(decoders.init(jax.random.key(0), spec), optimizer)
  step = training.TrainStep(optimizer, spec)
  losses = []
  for _ in range(5):
    state, metrics = step(state, features, tokens)
    # 4 real targets a caption (the 5 tokens shifted by one)
    assert isinstance(metrics["loss"], float) and metrics["count"] == 4 * 4
    losses.append(metrics["loss"])
  assert losses[-1] < losses[0] and int(state.step) == 5
  # The same loss as the plain function on the same batch, before any update.
  fresh = training.init_train_state(decoders.init(jax.random.key(0), spec), optimizer)
  _, first = step(fresh, features, tokens)
  np.testing.assert_allclose(first["loss"], losses[0], rtol=1e-6)
  expected = training.loss(decoders.init(jax.random.key(0), spec), spec, features, tokens)
  np.testing.assert_allclose(first["loss"], float(expected), rtol=1e-5)
  assert all(leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(state))


def test_packed_size_is_bounded_and_has_few_values():
  sizes = {training.packed_size(c, 2048) for c in range(1, 2049)}
  assert all(training.packed_size(c, 2048) >= c for c in range(1, 2049))
  # At most 1/8 padding rows once past the smallest granule; 8 sizes per doubling.
  assert all(training.packed_size(c, 2048) - c < max(8, c / 8) for c in range(1, 2049))
  assert len(sizes) <= 8 * 11 and training.packed_size(2047, 2048) == 2048
  # A COCO-like batch of 32 (about 12 targets a caption, +-17 in all): +-2 sigma, 4 sizes.
  assert len({training.packed_size(c, 2048) for c in range(350, 420)}) == 4


def test_pack_batch_lists_every_real_target_per_device():
  tokens = np.zeros((2, 3, 6), np.int32)
  for (d, row), length in zip(np.ndindex(2, 3), [6, 2, 4, 1, 3, 5]):
    tokens[d, row, :length] = 5
  same, positions = training.pack_batch(tokens)
  np.testing.assert_array_equal(same, tokens)  # nothing to trim below a multiple of 8
  targets = np.asarray(training.shift_targets(tokens.reshape(6, 6))).reshape(2, 18)
  for d in range(2):
    real = set(np.flatnonzero(targets[d]))
    assert real <= set(positions[d]) and len(real) == 9 - 3 * d
    assert (targets[d][positions[d]] != 0).sum() == len(real)  # padding rows: target 0
  assert positions.shape == (2, 16)  # 9 rounded up to the granule of 8
  assert training.pack_batch(np.full((1, 2, 4), 5, np.int32))[1] is None  # nothing to skip


def test_pack_batch_trims_trailing_padding_to_a_multiple_of_8():
  tokens = np.zeros((2, 2, 64), np.int32)
  tokens[0, 0, :5] = tokens[1, 1, :13] = 7
  trimmed, positions = training.pack_batch(tokens)
  assert trimmed.shape == (2, 2, 16) and positions.shape == (2, 16)
  np.testing.assert_array_equal(trimmed, tokens[..., :16])


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["gru", "gru_mha", "transformer"])
def test_packed_loss_and_gradients_equal_the_padded_ones(kind):
  """Projecting only the real positions gives the padded computation's loss (1e-6 relative)
  and gradients (1e-5)."""
  import jax  # pylint: disable=g-import-not-at-top

  from jaxcap.model import decoders  # pylint: disable=g-import-not-at-top
  v, u, p, d, b, t = 53, 16, 5, 12, 6, 11
  rng = np.random.default_rng(0)
  features = rng.normal(size=(b, p, d)).astype(np.float32)
  tokens = rng.integers(2, v, size=(b, t)).astype(np.int32)
  for row, length in enumerate([3, 11, 5, 2, 7, 4]):
    tokens[row, length:] = 0
  extra = {"gru": {}, "gru_mha": dict(num_heads=2),
           "transformer": dict(num_heads=2, num_layers=2)}[kind]
  spec = decoders.DecoderSpec(kind, vocab_size=v, units=u, feature_dim=d, positions=p, **extra)
  params = decoders.init(jax.random.key(1), spec)
  trimmed, positions = training.pack_batch(tokens[None])
  assert trimmed.shape == (1, b, t)
  positions = positions[0]
  assert len(positions) < b * t  # really packed

  def mean_loss(params, positions):
    total, count = training.loss_terms(params, spec, features, tokens, positions=positions)
    return total / count

  padded, padded_grads = jax.value_and_grad(mean_loss)(params, None)
  packed, packed_grads = jax.value_and_grad(mean_loss)(params, positions)
  np.testing.assert_allclose(float(packed), float(padded), rtol=1e-6)
  jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, atol=1e-5, rtol=0),
               packed_grads, padded_grads)
  # The packed rows really are the ones with targets: dropping one changes the loss.
  dropped = np.where(positions == positions[0], t - 1, positions)
  assert abs(float(mean_loss(params, dropped)) - float(padded)) > 1e-3
