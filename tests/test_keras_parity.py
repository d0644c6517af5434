"""jaxcap's GRU decoders against the seed's Keras model, run live (keras 3 on the JAX backend).

"gru" is the seed's model exactly; "gru_mha" is the same model with Keras's
MultiHeadAttention in place of its Attention layer, the course's suggested next step.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import seed_keras

from jaxcap import training
from jaxcap.model import decoders

pytestmark = pytest.mark.slow  # builds the seed's Keras models

V, U, P, D, L, B = 37, 16, 9, 24, 8, 4
HEADS, KEY_DIM = 3, 5  # key_dim * heads != units on purpose: the shapes must not coincide
SPECS = {
    "gru": decoders.DecoderSpec("gru", vocab_size=V, units=U, feature_dim=D, positions=P,
                                max_length=L),
    "gru_mha": decoders.DecoderSpec("gru_mha", vocab_size=V, units=U, feature_dim=D,
                                    positions=P, max_length=L, num_heads=HEADS,
                                    key_dim=KEY_DIM),
}


@pytest.fixture(scope="module", params=sorted(SPECS))
def seed(request):
  kind = request.param
  train_model, step_model = seed_keras.build_models(
      vocab_size=V, units=U, positions=P, feature_dim=D, max_length=L, seed=3,
      attention="dot" if kind == "gru" else "multi_head", num_heads=HEADS, key_dim=KEY_DIM)
  rng = np.random.default_rng(0)
  # Non-zero biases and LayerNorm offsets, so a mis-mapped bias cannot hide.
  for layer in train_model.layers:
    layer.set_weights([w + rng.normal(0, 0.1, w.shape).astype(np.float32)
                       for w in layer.get_weights()])
  features = rng.normal(size=(B, P, D)).astype(np.float32)
  tokens = rng.integers(2, V, size=(B, L)).astype(np.int32)
  tokens[:, 0] = 2
  tokens[0, 5:] = 0  # padded captions of different lengths
  tokens[1, 3:] = 0
  return train_model, step_model, features, tokens, SPECS[kind]


def test_teacher_forced_logits_match(seed):
  train_model, _, features, tokens, spec = seed
  expected = np.asarray(train_model([tokens, features]))
  params = seed_keras.to_jaxcap(train_model)
  assert ("attention" in params) == (spec.kind == "gru_mha")
  logits, attention = decoders.teacher_forced_logits(params, spec, features, tokens)
  np.testing.assert_allclose(logits, expected, atol=1e-5, rtol=0)
  np.testing.assert_allclose(attention.sum(-1), 1.0, atol=1e-5)


def test_one_step_decoder_matches_seed_step_model(seed):
  train_model, step_model, features, tokens, spec = seed
  params = seed_keras.to_jaxcap(train_model)
  grid_keras = np.asarray(train_model.get_layer("encoder_dense")(features))
  context = decoders.prepare(params, spec, features)
  np.testing.assert_allclose(context["grid"], grid_keras, atol=1e-5)
  state_k = np.zeros((B, U), np.float32)
  cache = decoders.initial_cache(params, spec, context, L)
  for t in range(4):
    logits_k, state_k = step_model([tokens[:, t:t + 1], np.asarray(state_k), grid_keras])
    logits_j, cache, _ = decoders.step(params, spec, context, cache, tokens[:, t], t)
    np.testing.assert_allclose(logits_j, np.asarray(logits_k)[:, 0], atol=1e-5)
    np.testing.assert_allclose(cache["hidden"], np.asarray(state_k), atol=1e-5)


def test_masked_loss_matches(seed):
  train_model, _, features, tokens, spec = seed
  targets = np.asarray(training.shift_targets(tokens))
  expected = float(seed_keras.seed_loss(targets, train_model([tokens, features])))
  params = seed_keras.to_jaxcap(train_model)
  got = float(training.loss(params, spec, features, tokens))
  assert abs(got - expected) < 1e-5
  # The mask matters: the unmasked mean differs, so the test would notice a lost mask.
  logits, _ = decoders.teacher_forced_logits(params, spec, features, tokens)
  unmasked = float(optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean())
  assert abs(unmasked - expected) > 1e-3


def test_one_adam_step_matches_keras(seed):
  train_model, _, features, tokens, spec = seed
  params = jax.tree.map(jnp.asarray, seed_keras.to_jaxcap(train_model))
  targets = np.asarray(training.shift_targets(tokens))
  model = train_model
  model.compile(optimizer=seed_keras.seed_optimizer(), loss=seed_keras.seed_loss)
  for _ in range(2):  # two steps: Keras's eps handling depends on the step count
    model.train_on_batch([tokens, features], targets)
  expected = seed_keras.to_jaxcap(model)

  optimizer = training.keras_adam(1e-3)
  state = training.init_train_state(params, optimizer)
  step = training.TrainStep(optimizer, spec)
  n = jax.local_device_count()
  for _ in range(2):
    state, _ = step(state, np.tile(features, (n, 1, 1)), np.tile(tokens, (n, 1)))
  got = jax.device_get(state.params)
  moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()),
                       got, params)
  assert max(jax.tree.leaves(moved)) > 1e-4  # the step really changed something
  diffs = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()),
                       got, expected)
  print("max adam diff", max(jax.tree.leaves(diffs)))
  assert max(jax.tree.leaves(diffs)) < 1e-5, diffs


def test_plain_optax_adam_would_not_match():
  """Guards the reason keras_adam exists: optax's eps placement differs from Keras's."""
  g = jnp.array([1e-8, 1e-3, 1.0])
  p = jnp.zeros(3)
  keras_like = training.keras_adam(1e-3)
  plain = optax.adam(1e-3, eps=1e-7)
  uk, _ = keras_like.update(g, keras_like.init(p), p)
  up, _ = plain.update(g, plain.init(p), p)
  # Keras: lr * g / (|g| + eps / sqrt(1 - b2)) at step 1.
  expected = -1e-3 * g / (jnp.abs(g) + 1e-7 / jnp.sqrt(1 - 0.999))
  np.testing.assert_allclose(uk, expected, rtol=1e-5)
  assert abs(float(up[0] - expected[0])) > 1e-5
