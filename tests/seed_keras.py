"""The seed's Keras decoder, rebuilt layer for layer, and a converter to jaxcap parameters.

This is the reference the parity tests and the benchmarks compare against (it lives beside
them, not in the package). It follows the course notebook: the training model runs a whole
caption, the one-step `decoder_pred_model` shares its layers and takes the GRU state as an
input. `attention="multi_head"` builds the course's suggested variant, with
`keras.layers.MultiHeadAttention(num_heads, key_dim)` in place of `keras.layers.Attention`.
Needs `keras` (3.x; the JAX backend is enough, no TensorFlow): `pip install -e '.[test]'`.
Importing this module sets KERAS_BACKEND to jax unless it is set.
"""

from __future__ import annotations

import os

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "jax")


def _keras():
  try:
    import keras  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("the seed reference needs keras: pip install 'keras>=3'") from e
  return keras


def build_models(*, vocab_size: int, units: int, positions: int, feature_dim: int,
                 max_length: int, seed: int = 0, attention: str = "dot", num_heads: int = 2,
                 key_dim: int = 8):
  """The seed's models at the given sizes (`attention`: "dot", the seed's, or "multi_head").

  Returns:
    (train_model, step_model). `train_model([tokens (B, L), features (B, P, D)])` -> logits
    (B, L, V). `step_model([token (B, 1), gru_state (B, U), grid (B, P, U)])` -> (logits
    (B, 1, V), gru_state (B, U)), where `grid` is the output of the encoder's Dense(relu),
    available as `train_model.get_layer("encoder_dense")`.
  """
  keras = _keras()
  layers = keras.layers
  keras.utils.set_random_seed(seed)
  features = keras.Input(shape=(positions, feature_dim), name="features")
  words = keras.Input(shape=(max_length,), dtype="int32", name="words")
  encoder_dense = layers.Dense(units, activation="relu", name="encoder_dense")
  embedding = layers.Embedding(vocab_size, units, name="embedding")
  gru = layers.GRU(units, return_sequences=True, return_state=True, name="gru")
  if attention == "dot":
    attend = layers.Attention(name="attention")
  else:
    mha = layers.MultiHeadAttention(num_heads, key_dim, name="attention")
    attend = lambda qv: mha(qv[0], qv[1])
  add = layers.Add(name="add")
  layer_norm = layers.LayerNormalization(axis=-1, name="layer_norm")
  output_dense = layers.Dense(vocab_size, name="logits")

  grid = encoder_dense(features)
  gru_output, _ = gru(embedding(words))
  context = attend([gru_output, grid])
  logits = output_dense(layer_norm(add([gru_output, context])))
  train_model = keras.Model([words, features], logits, name="seed_train")

  word = keras.Input(shape=(1,), dtype="int32", name="word")
  state_in = keras.Input(shape=(units,), name="gru_state_input")
  grid_in = keras.Input(shape=(positions, units), name="grid")
  step_out, state_out = gru(embedding(word), initial_state=state_in)
  step_context = attend([step_out, grid_in])
  step_logits = output_dense(layer_norm(add([step_out, step_context])))
  step_model = keras.Model([word, state_in, grid_in], [step_logits, state_out], name="seed_step")
  return train_model, step_model


def seed_loss(real, pred):
  """The seed's loss: per-token sparse cross-entropy, zeroed at padding, summed / count."""
  keras = _keras()
  ops = keras.ops
  losses = keras.losses.sparse_categorical_crossentropy(real, pred, from_logits=True)
  mask = ops.cast(ops.not_equal(real, 0), losses.dtype)
  return ops.sum(losses * mask) / ops.sum(mask)


def seed_optimizer(learning_rate: float = 1e-3):
  """The seed's `Adam()` with Keras's defaults (b1 0.9, b2 0.999, eps 1e-7)."""
  return _keras().optimizers.Adam(learning_rate=learning_rate)


def to_jaxcap(train_model) -> dict:
  """Copies the seed model's weights into a jaxcap decoder parameter tree.

  Keras's GRU (reset_after=True) keeps the [z, r, h] gates fused in one kernel and two bias
  rows (input, recurrent). They map onto Flax's GRUCell gate by gate; the recurrent r/z
  biases, which Flax's cell has no slot for, go to 'gru_recurrent_bias'.
  """
  get = lambda name: [np.asarray(w) for w in train_model.get_layer(name).get_weights()]
  enc_kernel, enc_bias = get("encoder_dense")
  (embedding,) = get("embedding")
  kernel, recurrent, bias = get("gru")
  gamma, beta = get("layer_norm")
  out_kernel, out_bias = get("logits")
  u = kernel.shape[1] // 3
  z, r, h = slice(0, u), slice(u, 2 * u), slice(2 * u, 3 * u)
  gru = {
      "iz": {"kernel": kernel[:, z], "bias": bias[0, z]},
      "ir": {"kernel": kernel[:, r], "bias": bias[0, r]},
      "in": {"kernel": kernel[:, h], "bias": bias[0, h]},
      "hz": {"kernel": recurrent[:, z]},
      "hr": {"kernel": recurrent[:, r]},
      "hn": {"kernel": recurrent[:, h], "bias": bias[1, h]},
  }
  params = {
      "encoder_dense": {"kernel": enc_kernel, "bias": enc_bias},
      "embedding": embedding,
      "gru": gru,
      "gru_recurrent_bias": {"r": bias[1, r], "z": bias[1, z]},
      "layer_norm": {"scale": gamma, "bias": beta},
      "logits": {"kernel": out_kernel, "bias": out_bias},
  }
  attention = get("attention")
  if attention:  # MultiHeadAttention: query, key, value (kernel, bias), output (kernel, bias)
    names = ("query", "key", "value", "output")
    params["attention"] = {n: {"kernel": attention[2 * i], "bias": attention[2 * i + 1]}
                           for i, n in enumerate(names)}
  return params
