"""The seed's decoder as pure functions over an explicit parameter pytree.

    features (B, P, D) --encode: Dense(units, relu)--> grid (B, P, U)
    token --embed--> (U) --GRUCell--> h --dot_attention(h, grid)--> context
          --residual_add(h, context)--> layer_norm --> Dense(vocab) logits

`step` runs one token; `teacher_forced_logits` runs a whole caption. Both embed with `embed`,
recur with `gru`, and finish with `readout`: the only difference is a `lax.scan` over time,
so the trained model and the sampled model cannot drift apart.

Parameter tree (shapes with V = vocabulary, U = units, D = encoder feature size)::

    {'encoder_dense': {'kernel': (D, U), 'bias': (U,)},
     'embedding': (V, U),
     'gru': flax GRUCell params {'ir','iz','in': kernel (U, U) + bias (U,),
                                 'hr','hz': kernel (U, U), 'hn': kernel (U, U) + bias (U,)},
     'gru_recurrent_bias': {'r': (U,), 'z': (U,)},   # Keras's second r/z biases, see `gru`
     'layer_norm': {'scale': (U,), 'bias': (U,)},
     'logits': {'kernel': (U, V), 'bias': (V,)},
     'grid_positions': (P, U),                                   # optional, see `encode`
     'init_hidden': {'kernel': (P * U, U), 'bias': (U,)}}        # optional, see `initial_hidden`
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcap import layers

Params = dict


def _keras_fused_init(base, gates: int = 3):
  """A Keras GRU kernel is one (in, 3*units) matrix; initialise it whole and keep one gate.

  Keras computes the glorot/orthogonal scale from the fused shape, so a per-gate
  initialiser would start from a different distribution than the seed.
  """

  def init(key, shape, dtype=jnp.float32):
    fused = base(key, (shape[0], gates * shape[1]), dtype)
    return fused[:, : shape[1]]

  return init


def _gru_cell(units: int) -> nn.GRUCell:
  # Keras GRU defaults: glorot_uniform kernels, orthogonal recurrent kernels, zero biases.
  return nn.GRUCell(
      features=units,
      kernel_init=_keras_fused_init(nn.initializers.glorot_uniform()),
      recurrent_kernel_init=_keras_fused_init(nn.initializers.orthogonal()),
  )


def init(key: jax.Array, *, vocab_size: int, units: int, feature_dim: int,
         positions: int = 0, position_embedding: bool = False,
         init_hidden: bool = False) -> Params:
  """Fresh parameters with Keras's initialisers (see the module docstring for the tree).

  Two options are not in the seed, and both need the grid size `positions` (P):
  `position_embedding` adds a learned embedding per grid position (see `encode`), and
  `init_hidden` starts the GRU from the image instead of zeros (see `initial_hidden`).
  """
  if (position_embedding or init_hidden) and not positions:
    raise ValueError("position_embedding and init_hidden need the grid size: pass positions")
  k_enc, k_emb, k_gru, k_out, k_pos, k_init = jax.random.split(key, 6)
  glorot = nn.initializers.glorot_uniform()
  zeros_u = jnp.zeros((units,), jnp.float32)
  gru_params = _gru_cell(units).init(
      k_gru, jnp.zeros((1, units), jnp.float32), jnp.zeros((1, units), jnp.float32)
  )["params"]
  params = {
      "encoder_dense": {"kernel": glorot(k_enc, (feature_dim, units)), "bias": zeros_u},
      # keras.layers.Embedding: uniform(-0.05, 0.05).
      "embedding": jax.random.uniform(k_emb, (vocab_size, units), jnp.float32, -0.05, 0.05),
      "gru": gru_params,
      "gru_recurrent_bias": {"r": zeros_u, "z": zeros_u},
      "layer_norm": {"scale": jnp.ones((units,), jnp.float32), "bias": zeros_u},
      "logits": {
          "kernel": glorot(k_out, (units, vocab_size)),
          "bias": jnp.zeros((vocab_size,), jnp.float32),
      },
  }
  if position_embedding:
    params["grid_positions"] = jax.random.uniform(k_pos, (positions, units), jnp.float32,
                                                  -0.05, 0.05)
  if init_hidden:
    params["init_hidden"] = {"kernel": glorot(k_init, (positions * units, units)),
                             "bias": zeros_u}
  return params


def encode(params: Params, features: jax.Array) -> jax.Array:
  """Encoder features (B, P, D) -> attention grid (B, P, U): the seed's Dense(units, relu).

  The seed's grid carries no explicit position, so "left of" must be read from whatever
  position the CNN features leak. With 'grid_positions' in `params` (an option, off in the
  seed's config), a learned (P, U) embedding is added so spatial relations are learnable.
  """
  grid = jax.nn.relu(layers.dense(params["encoder_dense"], features))
  if "grid_positions" in params:
    grid = grid + params["grid_positions"].astype(grid.dtype)
  return grid


def embed(params: Params, tokens: jax.Array) -> jax.Array:
  """Token ids (...,) -> embeddings (..., U)."""
  return jnp.take(params["embedding"], tokens, axis=0)


def gru(params: Params, hidden: jax.Array, inputs: jax.Array) -> jax.Array:
  """One GRU step: hidden (B, U), inputs (B, U) -> new hidden (B, U).

  Keras's GRU has an input bias and a recurrent bias on every gate; Flax's GRUCell folds
  the two of the r and z gates into one. We keep Keras's split in the parameter tree (the
  recurrent ones under 'gru_recurrent_bias') and fold here, so gradients and Adam's updates
  act on the same parameters as the seed's.
  """
  cell = dict(params["gru"])
  for gate in ("r", "z"):
    name = "i" + gate
    cell[name] = {"kernel": cell[name]["kernel"],
                  "bias": cell[name]["bias"] + params["gru_recurrent_bias"][gate]}
  new_hidden, _ = _gru_cell(hidden.shape[-1]).apply({"params": cell}, hidden, inputs)
  return new_hidden


def readout(params: Params, gru_out: jax.Array, grid: jax.Array) -> tuple[jax.Array, jax.Array]:
  """GRU outputs (B, T, U) and grid (B, P, U) -> logits (B, T, V), attention (B, T, P)."""
  context, attention = layers.dot_attention(gru_out, grid)
  normed = layers.layer_norm(params["layer_norm"], layers.residual_add(gru_out, context))
  return layers.dense(params["logits"], normed), attention


def step(
    params: Params, grid: jax.Array, tokens: jax.Array, hidden: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """One decoding step: the seed's `decoder_pred_model`.

  Args:
    params: decoder parameters.
    grid: (B, P, U), `encode(params, features)`, computed once per image.
    tokens: (B,) int, the previous tokens.
    hidden: (B, U), the GRU state.

  Returns:
    logits (B, V), the new hidden state (B, U) and attention weights (B, P).
  """
  hidden = gru(params, hidden, embed(params, tokens))
  logits, attention = readout(params, hidden[:, None, :], grid)
  return logits[:, 0], hidden, attention[:, 0]


def initial_hidden(params: Params, grid: jax.Array) -> jax.Array:
  """The GRU's first state (B, U) for a grid (B, P, U).

  The seed starts from zeros, so its GRU never sees the image: every query it sends to the
  attention is a function of the words alone. With 'init_hidden' in `params` (an option, off
  in the seed's config) the state starts as tanh(Dense(the whole flattened grid)), which lets
  the decoder plan from the layout (e.g. whether two shapes sit side by side or stacked).
  """
  if "init_hidden" in params:
    flat = grid.reshape(grid.shape[0], -1)
    return jnp.tanh(layers.dense(params["init_hidden"], flat))
  return jnp.zeros((grid.shape[0], params["layer_norm"]["scale"].shape[0]), grid.dtype)


def teacher_forced_logits(
    params: Params, features: jax.Array, tokens: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """The seed's training model: a whole caption at once.

  Args:
    params: decoder parameters.
    features: (B, P, D) encoder features.
    tokens: (B, T) int input ids (`<start>` first).

  Returns:
    logits (B, T, V) and attention weights (B, T, P).
  """
  grid = encode(params, features)
  inputs = embed(params, tokens)  # (B, T, U)

  def recur(hidden, x):
    hidden = gru(params, hidden, x)
    return hidden, hidden

  h0 = initial_hidden(params, grid).astype(inputs.dtype)
  _, gru_out = jax.lax.scan(recur, h0, jnp.swapaxes(inputs, 0, 1))  # (T, B, U)
  return readout(params, jnp.swapaxes(gru_out, 0, 1), grid)
