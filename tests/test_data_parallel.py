"""The train step on a mesh of 4 fake CPU devices equals 1 device on the same global batch."""

import os
import subprocess
import sys
import textwrap

import pytest
from helpers import ROOT

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

# The SCST update through the same step builder: fixed samples and advantages, 4 devices = 1;
# then the phase itself (sample on the devices, reward on the host, update) on 4 devices.
SCST_SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    from configs import quickstart
    from jaxcap import training
    from jaxcap.data import pipeline, text
    from jaxcap.model import decoders
    from jaxcap.training import parallel, policy_loss, scst
    assert jax.local_device_count() == 4, jax.devices()
    spec = decoders.DecoderSpec("gru", vocab_size=29, units=16, feature_dim=6)
    params = decoders.init(jax.random.key(0), spec)
    optimizer = training.keras_adam(1e-2)
    rng = np.random.default_rng(0)
    features = rng.normal(size=(8, 4, 6)).astype(np.float32)
    tokens = rng.integers(3, 29, size=(16, 7)).astype(np.int32)  # 2 samples an image
    tokens[np.arange(16), rng.integers(1, 7, size=16)] = 2  # each sample's <end>
    advantages = rng.normal(size=16).astype(np.float32)
    loss_fn = policy_loss.self_critical(spec, samples=2, temperature=1.0, start_id=1, end_id=2)

    def run(n):
      mesh = training.data_mesh(jax.devices()[:n])
      step = training.make_step(loss_fn, optimizer, mesh)
      state = training.init_train_state(params, optimizer, mesh)
      batch = parallel.global_batch(
          {"features": features, "tokens": tokens, "advantages": advantages}, mesh)
      state, metrics = step(state, batch)
      return jax.device_get(state.params), float(metrics["loss"])

    (p4, l4), (p1, l1) = run(4), run(1)
    np.testing.assert_allclose(l4, l1, rtol=1e-5)
    diff = max(jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(a - b).max()), p4, p1)))
    moved = max(jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(a - b).max()), p1, params)))
    assert moved > 1e-3 and diff < 1e-5, (moved, diff)

    config = quickstart.get_config()
    config.model.max_length, config.train.batch_size, config.train.num_steps = 8, 8, 0
    config.train.scst_steps, config.train.scst_samples, config.train.scst_batch_size = 2, 3, 8
    captions = [["a red circle"], ["a blue square"], ["a green triangle"], ["a red square"]] * 2
    vocab = text.Vocabulary.build([c[0] for c in captions], 30)
    data = pipeline.make_caption_set(features.astype(np.float16), captions, vocab, 8,
                                     all_captions=False)
    spec = decoders.DecoderSpec("gru", len(vocab), 8, 6, positions=4, max_length=8)
    phase = scst.Phase(config, data, vocab, spec, jax.random.key(1))
    state = training.init_train_state(decoders.init(jax.random.key(0), spec), optimizer)
    for step in (0, 1):
      state, metrics = phase.step(state, step)
      assert np.isfinite(float(metrics["loss"]))
    assert int(state.step) == 2 and 0 <= phase.pop_scalars()["scst_reward"] <= 10
    print("OK", diff)
""")


def run_on_four_devices(script):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
  assert result.returncode == 0, result.stdout + result.stderr
  assert "OK" in result.stdout


@pytest.mark.slow
def test_four_devices_equal_one_device():
  run_on_four_devices(SCRIPT)


@pytest.mark.slow
def test_scst_update_and_phase_on_four_devices():
  run_on_four_devices(SCST_SCRIPT)
