"""The seed's GRU with multi-head attention ("gru_mha"): the course's suggested next step.

The GRU core, its options and its parameters are gru.py's; the attention is
`keras.layers.MultiHeadAttention(num_heads, key_dim)` (query = the GRU output, key = value =
the grid) in place of the seed's single-head dot attention. Its parameters, added to gru.py's
tree (H heads of K)::

    'attention': {'query','key','value': {'kernel': (U, H, K), 'bias': (H, K)},
                  'output': {'kernel': (H, K, U), 'bias': (U,)}}
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcap.model import layers
from jaxcap.model.decoders import base, gru

Params = base.Params
OPTIONS = {**gru.OPTIONS, "num_heads": base.DEFAULT_NUM_HEADS, "key_dim": 0}
initial_cache = gru.initial_cache


def check(spec) -> list[str]:
  return base.check_heads(spec) + gru.check(spec)


def init(key: jax.Array, spec) -> Params:
  params, k_att = gru.init_core(key, spec)
  params["attention"] = layers.init_attention(k_att, spec.units, spec.num_heads, spec.head_dim)
  return params


def prepare(params: Params, spec, features: jax.Array) -> dict:
  """Per image, once: gru.py's {'grid': (B, P, U)} and the attention's keys and values
  ('keys', 'values': (B, P, H, K))."""
  context = gru.prepare(params, spec, features)
  context["keys"] = layers.heads(params["attention"]["key"], context["grid"])
  context["values"] = layers.heads(params["attention"]["value"], context["grid"])
  return context


def attend(params: Params, context: dict, query: jax.Array):
  """GRU outputs (B, T, U) -> context vectors (B, T, U), attention over the grid (B, T, P)."""
  att = params["attention"]
  heads_out, weights = layers.scaled_attention(
      layers.heads(att["query"], query), context["keys"], context["values"])
  # Figures show where the word looked: the heads' weights averaged.
  return layers.merge_heads(att["output"], heads_out), jnp.mean(weights, axis=-3)


def step(params: Params, spec, context: dict, cache: dict, tokens: jax.Array, index):
  del spec, index  # the GRU's state holds the position
  return gru.decode_step(params, context, cache, tokens, attend)


def teacher_forced(params: Params, spec, features: jax.Array, tokens: jax.Array,
                   dropout_rng=None):
  # No dropout, as the seed's GRU, unless the spec's rates say so.
  return gru.decode_sequence(params, prepare(params, spec, features), tokens, attend, spec,
                             dropout_rng)


def attention_description(spec) -> str:
  return f"attention averaged over the {spec.num_heads} heads"
