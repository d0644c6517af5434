"""The seed's GRU decoder ("gru"), and the GRU core it shares with "gru_mha" (gru_mha.py).

    features (B, P, D) --Dense(units, relu)--> grid (B, P, U)
    token --embed--> (U) --GRU--> h --attention(h, grid)--> context
          --residual_add(h, context)--> layer_norm --> outputs (U) --project--> logits (V)

"gru" attends with `keras.layers.Attention()` (Luong dot product, unscaled, single head);
gru_mha.py supplies another attention (`attend`) to the same core. The core is one code path:
`decode_sequence` (teacher forcing) is `decode_step`'s math with a `lax.scan` over time.

The GRU's input-side matmuls do not depend on the state, so `decode_sequence` does them for
all time steps in one matmul before the scan (as Keras's and cuDNN's fused GRUs do); the
scan keeps only the state-side matmul.

Parameter tree (V = vocabulary, U = units, D = encoder feature size), `init_core`'s::

    {'encoder_dense': {'kernel': (D, U), 'bias': (U,)},
     'embedding': (V, U),
     'gru': flax GRUCell params {'ir','iz','in': kernel (U, U) + bias (U,),
                                 'hr','hz': kernel (U, U), 'hn': kernel (U, U) + bias (U,)},
     'gru_recurrent_bias': {'r': (U,), 'z': (U,)},   # Keras's second r/z biases
     'layer_norm': {'scale': (U,), 'bias': (U,)},
     'logits': {'kernel': (U, V), 'bias': (V,)},
     'grid_positions': (P, U),                                   # optional, `layers.project_grid`
     'init_hidden': {'kernel': (P * U, U), 'bias': (U,)}}        # optional, `initial_hidden`
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcap.model import layers
from jaxcap.model.decoders import base

Params = base.Params
# The seed's two options, off in its config (see `initial_hidden`, `layers.project_grid`).
OPTIONS = {"grid_position_embedding": False, "init_hidden_from_image": False,
           "embedding_dropout": 0.0, "gru_output_dropout": 0.0}
# `layers.dropout` sites while training (off unless the spec's rates say so).
EMBEDDING_SITE, GRU_OUTPUT_SITE = 0, 1


def _keras_fused_init(initializer, gates: int = 3):
  """A Keras GRU kernel is one (in, 3*units) matrix; initialise it whole and keep one gate.

  Keras computes the glorot/orthogonal scale from the fused shape, so a per-gate
  initialiser would start from a different distribution than the seed.
  """

  def init(key, shape, dtype=jnp.float32):
    fused = initializer(key, (shape[0], gates * shape[1]), dtype)
    return fused[:, : shape[1]]

  return init


def _gru_cell_params(key: jax.Array, units: int) -> dict:
  # Keras GRU defaults: glorot_uniform kernels, orthogonal recurrent kernels, zero biases.
  cell = nn.GRUCell(
      features=units,
      kernel_init=_keras_fused_init(nn.initializers.glorot_uniform()),
      recurrent_kernel_init=_keras_fused_init(nn.initializers.orthogonal()),
  )
  zeros = jnp.zeros((1, units), jnp.float32)
  return cell.init(key, zeros, zeros)["params"]


def check(spec) -> list[str]:
  if spec.grid_position_embedding or spec.init_hidden_from_image:
    return base.check_positions(spec, "grid_position_embedding or init_hidden_from_image")
  return []


def init_core(key: jax.Array, spec) -> tuple[Params, jax.Array]:
  """Fresh GRU-core parameters with Keras's initialisers (see the module docstring for the
  tree), and a key left for the attention's own parameters (gru_mha's)."""
  k_enc, k_emb, k_gru, k_out, k_pos, k_init, k_att = jax.random.split(key, 7)
  glorot = nn.initializers.glorot_uniform()
  u, v = spec.units, spec.vocab_size
  zeros_u = jnp.zeros((u,), jnp.float32)
  params = {
      "encoder_dense": {"kernel": glorot(k_enc, (spec.feature_dim, u)), "bias": zeros_u},
      # keras.layers.Embedding: uniform(-0.05, 0.05).
      "embedding": jax.random.uniform(k_emb, (v, u), jnp.float32, -0.05, 0.05),
      "gru": _gru_cell_params(k_gru, u),
      "gru_recurrent_bias": {"r": zeros_u, "z": zeros_u},
      "layer_norm": {"scale": jnp.ones((u,), jnp.float32), "bias": zeros_u},
      "logits": {"kernel": glorot(k_out, (u, v)), "bias": jnp.zeros((v,), jnp.float32)},
  }
  if spec.grid_position_embedding:
    params["grid_positions"] = jax.random.uniform(k_pos, (spec.positions, u), jnp.float32,
                                                  -0.05, 0.05)
  if spec.init_hidden_from_image:
    params["init_hidden"] = {"kernel": glorot(k_init, (spec.positions * u, u)),
                             "bias": zeros_u}
  return params, k_att


def init(key: jax.Array, spec) -> Params:
  return init_core(key, spec)[0]


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


def gru_inputs(params: Params, tokens: jax.Array, drop_embedded=None) -> jax.Array:
  """Token ids (...,) -> the GRU's input-side pre-activations (..., 3U), gates [r, z, n].

  Keras keeps an input bias and a recurrent bias on every gate; Flax's GRUCell, whose
  parameter tree we keep, folds the r and z pair into one. The recurrent r/z biases live
  under 'gru_recurrent_bias' and are added here, so gradients and Adam's updates act on the
  same parameters as the seed's. `drop_embedded` (training): dropout on the embeddings.
  """
  cell, recurrent_bias = params["gru"], params["gru_recurrent_bias"]
  x = jnp.take(params["embedding"], tokens, axis=0)
  if drop_embedded is not None:
    x = drop_embedded(x)
  kernel = jnp.concatenate([cell[g]["kernel"] for g in ("ir", "iz", "in")], axis=1)
  bias = jnp.concatenate([cell["ir"]["bias"] + recurrent_bias["r"],
                          cell["iz"]["bias"] + recurrent_bias["z"], cell["in"]["bias"]])
  return x @ kernel.astype(x.dtype) + bias.astype(x.dtype)


def gru_update(params: Params, hidden: jax.Array, inputs: jax.Array) -> jax.Array:
  """One GRU step (reset_after): hidden (B, U) and `gru_inputs` (B, 3U) -> new hidden (B, U).

  h' = (1 - z) * n + z * h with r, z = sigmoid(x_rz + h W_rz), n = tanh(x_n + r * (h W_n + b)).
  """
  cell = params["gru"]
  kernel = jnp.concatenate([cell[g]["kernel"] for g in ("hr", "hz", "hn")], axis=1)
  recurrent = hidden @ kernel.astype(hidden.dtype)  # (B, 3U)
  x_r, x_z, x_n = jnp.split(inputs, 3, axis=-1)
  h_r, h_z, h_n = jnp.split(recurrent, 3, axis=-1)
  r = jax.nn.sigmoid(x_r + h_r)
  z = jax.nn.sigmoid(x_z + h_z)
  n = jnp.tanh(x_n + r * (h_n + cell["hn"]["bias"].astype(hidden.dtype)))
  return (1.0 - z) * n + z * hidden


def prepare(params: Params, spec, features: jax.Array) -> dict:
  """Per image, once: {'grid': (B, P, U)}."""
  del spec
  # 'grid_positions' is an option, off in the seed's config.
  return {"grid": layers.project_grid(params["encoder_dense"], features,
                                     params.get("grid_positions"))}


def attend(params: Params, context: dict, query: jax.Array):
  """GRU outputs (B, T, U) -> context vectors (B, T, U), attention over the grid (B, T, P):
  the seed's single-head dot attention."""
  del params
  return layers.dot_attention(query, context["grid"])


def readout(params: Params, context: dict, gru_out: jax.Array, attend_fn):
  """GRU outputs (B, T, U) -> outputs (B, T, U) (attention, add, LayerNorm), attention.
  `attend_fn(params, context, query)` is the decoder's attention (`attend` here)."""
  attended, attention = attend_fn(params, context, gru_out)
  normed = layers.layer_norm(params["layer_norm"], layers.residual_add(gru_out, attended))
  return normed, attention


def initial_cache(params: Params, spec, context: dict, max_length: int) -> dict:
  del spec, max_length  # the GRU's state has no length
  return {"hidden": initial_hidden(params, context["grid"])}


def decode_step(params: Params, context: dict, cache: dict, tokens: jax.Array, attend_fn):
  """One token per caption: the seed's `decoder_pred_model`, with `attend_fn`'s attention."""
  hidden = gru_update(params, cache["hidden"], gru_inputs(params, tokens))
  outputs, attention = readout(params, context, hidden[:, None, :], attend_fn)
  return outputs[:, 0], {"hidden": hidden}, attention[:, 0]


def decode_sequence(params: Params, context: dict, tokens: jax.Array, attend_fn, spec=None,
                    dropout_rng=None):
  """The seed's training model on a prepared context: tokens (B, T) -> outputs (B, T, U),
  attention (B, T, P), with `attend_fn`'s attention. With `dropout_rng`, the spec's
  embedding_dropout and gru_output_dropout (before the attention and the add)."""
  rates = (spec.embedding_dropout, spec.gru_output_dropout) if spec else (0.0, 0.0)
  inputs = gru_inputs(params, tokens, lambda x: layers.dropout(x, rates[0], dropout_rng,
                                                               EMBEDDING_SITE))
  # (B, T, 3U) above: all time steps in one matmul

  def recur(hidden, x):
    hidden = gru_update(params, hidden, x)
    return hidden, hidden

  h0 = initial_hidden(params, context["grid"]).astype(inputs.dtype)
  _, gru_out = jax.lax.scan(recur, h0, jnp.swapaxes(inputs, 0, 1))  # (T, B, U)
  gru_out = layers.dropout(jnp.swapaxes(gru_out, 0, 1), rates[1], dropout_rng, GRU_OUTPUT_SITE)
  return readout(params, context, gru_out, attend_fn)


def step(params: Params, spec, context: dict, cache: dict, tokens: jax.Array, index):
  del spec, index  # the GRU's state holds the position
  return decode_step(params, context, cache, tokens, attend)


def teacher_forced(params: Params, spec, features: jax.Array, tokens: jax.Array,
                   dropout_rng=None):
  # The seed's GRU has no dropout; the spec's rates are 0 unless set.
  return decode_sequence(params, prepare(params, spec, features), tokens, attend, spec,
                         dropout_rng)


def attention_description(spec) -> str:
  del spec
  return "attention over the grid"
