"""A Transformer decoder over the image grid, with a key/value cache for decoding.

    features (B, P, D) --Dense(U, relu) + grid-position embedding--> grid (B, P, U)
    tokens (B, T) --embedding + position embedding--> x (B, T, U)
    N x [ x += SelfAttention(LN(x), causal)        keys/values of past tokens
          x += CrossAttention(LN(x), grid)         keys/values of the grid, once per image
          x += MLP(LN(x)) ]                        Dense(mlp_dim, gelu) -> Dense(U)
    LN(x) -> outputs (B, T, U) --project--> logits (B, T, V)

Pre-LayerNorm blocks as in GPT-2 and big_vision's CapPa decoder; dropout (`spec.dropout`) on
the embeddings and on each block's three residual branches while training.

`step` runs the same blocks on one token at position `index`: it writes that token's self-
attention keys and values into the cache at `index` and attends over the cache with the
later positions masked, so a step costs the same at every position and equals the teacher-
forced pass position by position.

Parameter tree (V vocabulary, U units, L max_length, P grid, D features, H heads of K,
M mlp_dim)::

    {'encoder_dense': {'kernel': (D, U), 'bias': (U,)}, 'grid_positions': (P, U),
     'embedding': (V, U), 'positions': (L, U),
     'blocks': [{'self_norm', 'cross_norm', 'mlp_norm': {'scale': (U,), 'bias': (U,)},
                 'self_attention', 'cross_attention':
                     {'query', 'key', 'value': {'kernel': (U, H, K), 'bias': (H, K)},
                      'output': {'kernel': (H, K, U), 'bias': (U,)}},
                 'mlp': {'hidden': {'kernel': (U, M), 'bias': (M,)},
                         'output': {'kernel': (M, U), 'bias': (U,)}}}, ...],   # N blocks
     'final_norm': {'scale': (U,), 'bias': (U,)},
     'logits': {'kernel': (U, V), 'bias': (V,)}}
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcap.model import layers
from jaxcap.model.decoders import base

Params = base.Params
EPSILON = 1e-6  # LayerNorm epsilon, as in Flax and most Transformer code
# num_heads, key_dim (per head; 0 = U / heads), num_layers, mlp_dim (0 = 4 U), dropout.
OPTIONS = {"num_heads": base.DEFAULT_NUM_HEADS, "key_dim": 0,
           "num_layers": base.DEFAULT_NUM_LAYERS, "mlp_dim": 0, "dropout": 0.0}


def _norm(u: int) -> dict:
  return {"scale": jnp.ones((u,), jnp.float32), "bias": jnp.zeros((u,), jnp.float32)}


def _dense(key, d_in: int, d_out: int) -> dict:
  return {"kernel": nn.initializers.xavier_uniform()(key, (d_in, d_out)),
          "bias": jnp.zeros((d_out,), jnp.float32)}


def check(spec) -> list[str]:
  p = base.check_heads(spec)
  if spec.num_layers < 1:
    p.append(f"model.num_layers must be >= 1, not {spec.num_layers}")
  if not base.DROPOUT[1](spec.dropout):
    p.append(f"model.dropout = {spec.dropout!r}: must be {base.DROPOUT[0]}")
  return p + base.check_positions(spec, "the transformer (its grid-position embedding)")


def attention_description(spec) -> str:
  return (f"cross-attention of the last of {spec.num_layers} blocks, averaged over its "
          f"{spec.num_heads} heads")


def init(key: jax.Array, spec) -> Params:
  u, h, k, m = spec.units, spec.num_heads, spec.head_dim, spec.hidden_dim
  keys = jax.random.split(key, 5 + spec.num_layers)
  embed = nn.initializers.normal(0.02)
  blocks = []
  for block_key in keys[5:]:
    ks, kc, kh, ko = jax.random.split(block_key, 4)
    blocks.append({
        "self_norm": _norm(u), "self_attention": layers.init_attention(ks, u, h, k),
        "cross_norm": _norm(u), "cross_attention": layers.init_attention(kc, u, h, k),
        "mlp_norm": _norm(u), "mlp": {"hidden": _dense(kh, u, m), "output": _dense(ko, m, u)},
    })
  return {
      "encoder_dense": _dense(keys[0], spec.feature_dim, u),
      "grid_positions": embed(keys[1], (spec.positions, u)),
      "embedding": embed(keys[2], (spec.vocab_size, u)),
      "positions": embed(keys[3], (spec.max_length, u)),
      "blocks": blocks,
      "final_norm": _norm(u),
      "logits": _dense(keys[4], u, spec.vocab_size),
  }


_dropout = layers.dropout


def prepare(params: Params, spec, features: jax.Array) -> dict:
  """Per image, once: the grid (B, P, U) and each block's cross-attention keys and values,
  'cross_keys': lists of (B, H, K, P), 'cross_values': of (B, H, P, K) (`layers.heads_first`:
  no step transposes them)."""
  del spec
  grid = layers.project_grid(params["encoder_dense"], features, params["grid_positions"])
  keys, values = zip(*(layers.heads_first(layers.heads(b["cross_attention"]["key"], grid),
                                          layers.heads(b["cross_attention"]["value"], grid))
                       for b in params["blocks"]))
  return {"grid": grid, "cross_keys": list(keys), "cross_values": list(values)}


def _blocks(params: Params, spec, context: dict, x: jax.Array, self_attend, dropout_rng):
  """The N blocks over x (B, T, U). `self_attend(layer, q, k, v)` -> (context (B, T, H, K),
  new cache entry): causal over x itself, or over a cache. Returns (outputs (B, T, U), the
  last block's cross-attention averaged over heads (B, T, P), new cache entries)."""
  entries = []
  for i, block in enumerate(params["blocks"]):
    site = 3 * i + 1
    h = layers.layer_norm(block["self_norm"], x, EPSILON)
    att = block["self_attention"]
    heads_out, entry = self_attend(
        i, *layers.fused_heads([att["query"], att["key"], att["value"]], h))
    entries.append(entry)
    x = x + _dropout(layers.merge_heads(att["output"], heads_out), spec.dropout, dropout_rng,
                     site)

    h = layers.layer_norm(block["cross_norm"], x, EPSILON)
    att = block["cross_attention"]
    heads_out, weights = layers.scaled_attention(
        layers.heads(att["query"], h), context["cross_keys"][i], context["cross_values"][i],
        heads_first=True)
    x = x + _dropout(layers.merge_heads(att["output"], heads_out), spec.dropout, dropout_rng,
                     site + 1)

    h = layers.layer_norm(block["mlp_norm"], x, EPSILON)
    h = layers.dense(block["mlp"]["output"], jax.nn.gelu(layers.dense(block["mlp"]["hidden"], h)))
    x = x + _dropout(h, spec.dropout, dropout_rng, site + 2)
  # Figures draw the last block's cross-attention, averaged over its heads.
  attention = jnp.mean(weights, axis=-3)
  return layers.layer_norm(params["final_norm"], x, EPSILON), attention, entries


def _embed(params: Params, tokens: jax.Array, positions: jax.Array) -> jax.Array:
  """tokens (B, T) at positions (T,) -> (B, T, U)."""
  return (jnp.take(params["embedding"], tokens, axis=0)
          + jnp.take(params["positions"], positions, axis=0))


def teacher_forced(params: Params, spec, features: jax.Array, tokens: jax.Array,
                   dropout_rng=None):
  """features (B, P, D), tokens (B, T) -> outputs (B, T, U), attention (B, T, P)."""
  context = prepare(params, spec, features)
  length = tokens.shape[1]
  x = _dropout(_embed(params, tokens, jnp.arange(length)), spec.dropout, dropout_rng, 0)
  causal = jnp.tril(jnp.ones((length, length), bool))  # (T, T): query t sees keys <= t

  def self_attend(_, q, k, v):
    heads_out, _ = layers.scaled_attention(q, k, v, causal)
    return heads_out, None

  outputs, attention, _ = _blocks(params, spec, context, x, self_attend, dropout_rng)
  return outputs, attention


def initial_cache(params: Params, spec, context: dict, max_length: int) -> dict:
  """Per block, the self-attention keys (B, H, K, L) and values (B, H, L, K) of every
  position, zeros (`layers.heads_first`'s layouts, which `step` reads)."""
  if max_length > spec.max_length:
    raise ValueError(f"decoding {max_length} tokens, but this transformer has position "
                     f"embeddings for {spec.max_length} (model.max_length)")
  batch = context["grid"].shape[0]
  h, k = spec.num_heads, spec.head_dim
  zeros = lambda *shape: jnp.zeros((batch,) + shape, context["grid"].dtype)
  return {"keys": [zeros(h, k, max_length) for _ in params["blocks"]],
          "values": [zeros(h, max_length, k) for _ in params["blocks"]]}


def step(params: Params, spec, context: dict, cache: dict, tokens: jax.Array, index):
  """tokens (B,) at position `index` -> outputs (B, U), cache, attention (B, P)."""
  x = _embed(params, tokens[:, None], jnp.reshape(index, (1,)))  # (B, 1, U)
  length = cache["values"][0].shape[2]
  earlier = (jnp.arange(length) < index)[None, :]  # (1, L): the positions before this one

  def self_attend(i, q, k, v):
    heads_out = layers.attend_cache_and_new(q, cache["keys"][i], cache["values"][i], k, v,
                                            earlier)
    k, v = layers.heads_first(k, v)  # (B, H, K, 1), (B, H, 1, K): written at `index`
    write = lambda c, new, axis: jax.lax.dynamic_update_slice_in_dim(
        c, new.astype(c.dtype), index, axis=axis)
    return heads_out, (write(cache["keys"][i], k, 3), write(cache["values"][i], v, 2))

  outputs, attention, entries = _blocks(params, spec, context, x, self_attend, None)
  new_cache = {"keys": [k for k, _ in entries], "values": [v for _, v in entries]}
  return outputs[:, 0], new_cache, attention[:, 0]
