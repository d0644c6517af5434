"""jaxcap.layers against the Keras layers the seed uses (keras 3 on the JAX backend)."""

import keras
import numpy as np

from jaxcap import layers

RNG = np.random.default_rng(0)


def test_dense_equals_keras():
  x = RNG.normal(size=(2, 3, 5)).astype(np.float32)
  dense = keras.layers.Dense(4)
  dense.build(x.shape)
  kernel, bias = dense.get_weights()
  bias = RNG.normal(size=bias.shape).astype(np.float32)  # Keras starts it at 0: make it count
  dense.set_weights([kernel, bias])
  expected = np.asarray(dense(x))
  got = layers.dense({"kernel": kernel, "bias": bias}, x)
  np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_dot_attention_equals_keras_attention():
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


def test_layer_norm_equals_keras():
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


def test_residual_add_equals_keras_add():
  x, y = RNG.normal(size=(2, 3, 4)), RNG.normal(size=(2, 3, 4))
  np.testing.assert_allclose(layers.residual_add(x, y), keras.layers.Add()([x, y]), rtol=1e-6)
