"""bfloat16 compute with float32 parameters and loss: runs on CPU and follows float32 closely,
also far from initialisation, where the loss depends on what the model has learned."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcap import training
from jaxcap.model import decoders


@pytest.mark.slow
def test_bfloat16_loss_and_training_follow_float32():
  rng = np.random.default_rng(0)
  features = rng.normal(size=(8, 9, 32)).astype(np.float32)
  tokens = rng.integers(2, 50, size=(8, 12)).astype(np.int32)
  tokens[:, 9:] = 0
  spec = decoders.DecoderSpec("gru", vocab_size=50, units=32, feature_dim=32)
  params = decoders.init(jax.random.key(0), spec)
  f32 = float(training.loss(params, spec, features, tokens))
  bf16 = float(training.loss(params, spec, features, tokens, jnp.bfloat16))
  # bfloat16 rounds to 2^-9 = 0.2% relative; the loss, summed in float32, lands much closer
  # (measured 6e-5 relative).
  assert abs(bf16 - f32) / f32 < 1e-3 and bf16 != f32  # really computed in bfloat16

  # 40 steps at a high learning rate memorise the batch: the loss falls from log(50) = 3.9 to
  # about 0.01, where a loss rounded in bfloat16 would be off by far more than this tolerance
  # (measured: at most 0.7% apart, step by step).
  optimizer = training.keras_adam(1e-2)
  losses = {}
  for dtype in (jnp.float32, jnp.bfloat16):
    state = training.init_train_state(params, optimizer)
    step = training.TrainStep(optimizer, spec, dtype)
    curve = []
    for _ in range(40):
      state, metrics = step(state, features, tokens)
      curve.append(metrics["loss"])
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(state.params))
    losses[dtype] = np.array(curve)
  f32, bf16 = losses[jnp.float32], losses[jnp.bfloat16]
  assert f32[-1] < f32[0] / 100  # trained far from initialisation
  np.testing.assert_allclose(bf16, f32, rtol=1.5e-2, atol=0)
  assert (bf16 != f32).any()
