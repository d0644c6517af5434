"""jaxcap.model.layers against the Keras layers the seed uses (keras 3 on the JAX backend)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcap.model import layers

# Keras takes seconds to import: it loads with the first test that asks for it, not when
# `pytest -m "not slow"` collects this file.
pytestmark = pytest.mark.slow

RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def keras():
  import keras  # pylint: disable=g-import-not-at-top,redefined-outer-name
  return keras


def test_dense_equals_keras(keras):
  x = RNG.normal(size=(2, 3, 5)).astype(np.float32)
  dense = keras.layers.Dense(4)
  dense.build(x.shape)
  kernel, bias = dense.get_weights()
  bias = RNG.normal(size=bias.shape).astype(np.float32)  # Keras starts it at 0: make it count
  dense.set_weights([kernel, bias])
  expected = np.asarray(dense(x))
  got = layers.dense({"kernel": kernel, "bias": bias}, x)
  np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_dot_attention_equals_keras_attention(keras):
  query = RNG.normal(size=(2, 4, 8)).astype(np.float32)  # (B, T, D)
  value = RNG.normal(size=(2, 6, 8)).astype(np.float32)  # (B, P, D)
  context, scores = keras.layers.Attention()([query, value], return_attention_scores=True)
  got_context, got_weights = layers.dot_attention(query, value)
  np.testing.assert_allclose(got_weights, scores, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got_context, context, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(got_weights).sum(-1), 1.0, rtol=1e-6)
  # The same call with an extra leading axis (the one-step decoder's shapes).
  one, _ = layers.dot_attention(query[:, None, :1], value[:, None])
  np.testing.assert_allclose(one[:, 0], np.asarray(context)[:, :1], rtol=1e-5, atol=1e-5)


def test_layer_norm_equals_keras(keras):
  x = (RNG.normal(size=(3, 7)) * 4 + 2).astype(np.float32)
  norm = keras.layers.LayerNormalization(epsilon=layers.KERAS_LAYER_NORM_EPSILON)
  norm.build(x.shape)
  scale = RNG.normal(size=(7,)).astype(np.float32)
  bias = RNG.normal(size=(7,)).astype(np.float32)
  norm.set_weights([scale, bias])
  got = layers.layer_norm({"scale": scale, "bias": bias}, x)
  np.testing.assert_allclose(got, norm(x), rtol=1e-5, atol=1e-5)
  # Keras's epsilon, not Flax's 1e-6: on a nearly constant row the two differ.
  flat = np.full((1, 7), 1.0, np.float32) + np.linspace(0, 1e-2, 7, dtype=np.float32)
  ones = {"scale": np.ones(7, np.float32), "bias": np.zeros(7, np.float32)}
  keras_plain = keras.layers.LayerNormalization(epsilon=1e-3, center=False, scale=False)
  np.testing.assert_allclose(layers.layer_norm(ones, flat), keras_plain(flat), rtol=1e-5,
                             atol=1e-5)
  assert np.abs(np.asarray(layers.layer_norm(ones, flat, epsilon=1e-6))
                - np.asarray(layers.layer_norm(ones, flat))).max() > 0.5


def test_residual_add_equals_keras_add(keras):
  x, y = RNG.normal(size=(2, 3, 4)), RNG.normal(size=(2, 3, 4))
  np.testing.assert_allclose(layers.residual_add(x, y), keras.layers.Add()([x, y]), rtol=1e-6)


def test_cross_entropy_terms_equal_keras_over_real_tokens(keras):
  logits = RNG.normal(size=(2, 5, 11)).astype(np.float32)
  targets = np.array([[4, 2, 7, 0, 0], [1, 9, 0, 0, 0]])
  total, count = layers.cross_entropy_terms(logits, targets)
  real = targets != 0
  per_token = keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)
  assert float(count) == real.sum()
  np.testing.assert_allclose(float(total), np.asarray(per_token)[real].sum(), rtol=1e-5)
  # What the logits say at padding does not count.
  logits[~real] = 100 * RNG.normal(size=logits[~real].shape)
  np.testing.assert_allclose(float(layers.cross_entropy_terms(logits, targets)[0]),
                             float(total), rtol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_dense_cross_entropy_gradient_equals_autodiff(dtype):
  """The written-out gradient of projection + loss equals JAX differentiating the two calls
  (float32: 1e-6 of the largest entry; bfloat16 inputs: the same casts, looser)."""
  n, u, v = 12, 6, 37
  params = {"kernel": jnp.asarray(RNG.normal(size=(u, v)), dtype),
            "bias": jnp.asarray(RNG.normal(size=(v,)), dtype)}
  x = jnp.asarray(RNG.normal(size=(n, u)), dtype)
  targets = jnp.asarray(RNG.integers(1, v, size=n)).at[jnp.array([3, 7, 8])].set(0)

  def autodiff(params, x):
    total, count = layers.cross_entropy_terms(layers.dense(params, x), targets)
    return total / count

  def written(params, x):
    total, count = layers.dense_cross_entropy(params, x, targets)
    return total / count

  expected, expected_grads = jax.value_and_grad(autodiff, argnums=(0, 1))(params, x)
  got, got_grads = jax.value_and_grad(written, argnums=(0, 1))(params, x)
  tol = 1e-6 if dtype == jnp.float32 else 1e-2
  np.testing.assert_allclose(float(got), float(expected), rtol=tol)
  for g, e in zip(jax.tree.leaves(got_grads), jax.tree.leaves(expected_grads)):
    assert g.dtype == e.dtype and g.shape == e.shape
    e = np.asarray(e, np.float32)
    np.testing.assert_allclose(np.asarray(g, np.float32), e, rtol=0,
                               atol=tol * np.abs(e).max())
  # Padding rows get no gradient.
  assert not np.any(np.asarray(got_grads[1], np.float32)[[3, 7, 8]])
