"""bfloat16 compute with float32 parameters and loss: runs on CPU, lands near float32."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxcap import decoders, training


def test_bfloat16_loss_and_step_close_to_float32():
  rng = np.random.default_rng(0)
  features = rng.normal(size=(8, 9, 32)).astype(np.float32)
  tokens = rng.integers(2, 50, size=(8, 12)).astype(np.int32)
  tokens[:, 9:] = 0
  spec = decoders.DecoderSpec("gru", vocab_size=50, units=32, feature_dim=32)
  params = decoders.init(jax.random.key(0), spec)
  f32 = float(training.loss(params, spec, features, tokens))
  bf16 = float(training.loss(params, spec, features, tokens, jnp.bfloat16))
  assert abs(bf16 - f32) / f32 < 2e-2 and bf16 != f32  # really computed in bfloat16

  optimizer = training.keras_adam(1e-3)
  losses = {}
  for name, dtype in (("f32", jnp.float32), ("bf16", jnp.bfloat16)):
    state = training.replicate(training.init_state(params, optimizer))
    step = training.make_train_step(optimizer, spec, dtype)
    n = jax.local_device_count()
    for _ in range(5):
      state, loss = step(state, training.shard(features, n), training.shard(tokens, n))
    final = training.unreplicate(state)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(final.params))
    losses[name] = float(loss[0])
  assert abs(losses["bf16"] - losses["f32"]) / losses["f32"] < 3e-2
