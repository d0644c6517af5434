"""The train step on a mesh of 4 fake CPU devices equals 1 device on the same global batch."""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    from jaxcap.model import decoders
    from jaxcap import training
    assert jax.local_device_count() == 4, jax.devices()
    V, U, P, D, L, B = 31, 16, 5, 12, 9, 8
    rng = np.random.default_rng(0)
    features = rng.normal(size=(B, P, D)).astype(np.float32)
    tokens = rng.integers(2, V, size=(B, L)).astype(np.int32)
    for row, length in enumerate([9, 3, 5, 2, 7, 4, 9, 6]):  # uneven padding per shard
      tokens[row, length:] = 0
    spec = decoders.DecoderSpec("gru", vocab_size=V, units=U, feature_dim=D)
    params = decoders.init(jax.random.key(0), spec)
    optimizer = training.keras_adam(1e-2)

    def run(n):
      mesh = training.data_mesh(jax.devices()[:n])
      state = training.init_train_state(params, optimizer, mesh)
      step = training.TrainStep(optimizer, spec, mesh=mesh)
      losses = []
      for _ in range(3):
        state, metrics = step(state, features, tokens)  # waits: no queued collectives
        losses.append(metrics["loss"])
      leaf = jax.tree.leaves(state.params)[0]
      assert leaf.sharding.mesh.size == n and leaf.sharding.is_fully_replicated
      return jax.device_get(state.params), losses

    p4, l4 = run(4)
    p1, l1 = run(1)
    assert l1[0] > l1[-1], l1  # it learns
    np.testing.assert_allclose(l4, l1, rtol=1e-5)
    diff = max(jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(a - b).max()), p4, p1)))
    moved = max(jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(a - b).max()), p1, params)))
    assert moved > 1e-3 and diff < 1e-5, (moved, diff)
    print("OK", diff, l1)
""")


def test_four_devices_equal_one_device():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stdout + result.stderr
  assert "OK" in result.stdout
