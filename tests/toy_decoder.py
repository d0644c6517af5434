"""A toy decoder that only tests register: all a plug-in decoder module has to provide.

    tokens (B, T) --embed--> the running mean of the embeddings so far (B, T, U)
        --dot attention over the grid, add, tanh--> outputs (B, T, U)

Causal, image-dependent, with a cache (the running sum) and no options. Parameter tree::

    {'encoder_dense': {'kernel': (D, U), 'bias': (U,)}, 'embedding': (V, U),
     'logits': {'kernel': (U, V), 'bias': (V,)}}
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcap.model import layers

OPTIONS = {}  # reads none of DecoderSpec's options: they must stay 0


def check(spec) -> list[str]:
  del spec
  return []


def init(key: jax.Array, spec) -> dict:
  k_enc, k_emb, k_out = jax.random.split(key, 3)
  glorot = nn.initializers.glorot_uniform()
  u, v = spec.units, spec.vocab_size
  return {
      "encoder_dense": {"kernel": glorot(k_enc, (spec.feature_dim, u)), "bias": jnp.zeros(u)},
      "embedding": 0.5 * jax.random.normal(k_emb, (v, u)),
      "logits": {"kernel": glorot(k_out, (u, v)), "bias": jnp.zeros(v)},
  }


def prepare(params: dict, spec, features: jax.Array) -> dict:
  del spec
  return {"grid": layers.project_grid(params["encoder_dense"], features)}


def _readout(context: dict, query: jax.Array):
  """query (B, T, U) -> outputs (B, T, U), attention (B, T, P)."""
  attended, attention = layers.dot_attention(query, context["grid"])
  return jnp.tanh(query + attended), attention


def teacher_forced(params: dict, spec, features: jax.Array, tokens: jax.Array,
                   dropout_rng=None):
  del dropout_rng
  context = prepare(params, spec, features)
  x = jnp.take(params["embedding"], tokens, axis=0)
  counts = jnp.arange(1, tokens.shape[1] + 1, dtype=x.dtype)[:, None]
  return _readout(context, jnp.cumsum(x, axis=1) / counts)


def initial_cache(params: dict, spec, context: dict, max_length: int) -> dict:
  del spec, max_length
  grid = context["grid"]
  return {"sum": jnp.zeros((grid.shape[0], params["embedding"].shape[1]), grid.dtype)}


def step(params: dict, spec, context: dict, cache: dict, tokens: jax.Array, index):
  del spec
  total = cache["sum"] + jnp.take(params["embedding"], tokens, axis=0).astype(cache["sum"].dtype)
  outputs, attention = _readout(context, (total / (index + 1))[:, None])
  return outputs[:, 0], {"sum": total}, attention[:, 0]


def attention_description(spec) -> str:
  del spec
  return "the toy's attention over the grid"
