"""Beam search compiled whole: one `lax.while_loop` over batch x beam, for any decoder.

Each step expands every live beam with the decoder's one-step function (`decoders.step`,
the same one greedy and sampling use) and keeps the K best continuations; the decoder's
cache (GRU state, Transformer keys/values) follows its beam. Those that emitted `<end>` move
into a finished pool, scored with the GNMT length penalty ((5 + length) / 6) ** alpha, and
their slots die (the beam narrows, as in the usual captioning beam search; so beam size 1 is
exactly greedy). The loop stops at `max_length`, or once no live beam can still beat the
worst finished one; captions still live at `max_length` compete with the finished ones.
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp

from jaxcap.decoding import constraints
from jaxcap.model import decoders

NEG_INF = -1.0e9


def length_penalty(length: jax.Array, alpha: float) -> jax.Array:
  """GNMT's ((5 + length) / 6) ** alpha; alpha = 0 ranks by plain log-probability."""
  return ((5.0 + jnp.asarray(length, jnp.float32)) / 6.0) ** alpha


@flax.struct.dataclass
class BeamState:
  index: jax.Array  # () int32, positions generated so far
  alive_tokens: jax.Array  # (B, K, L) int32
  alive_attention: jax.Array  # (B, K, L, P) float32
  alive_log_probs: jax.Array  # (B, K) float32, summed log-probabilities
  cache: Any  # the decoder's state, leaves (B * K, ...)
  finished_tokens: jax.Array  # (B, K, L) int32, `<end>` included, 0 after
  finished_attention: jax.Array  # (B, K, L, P) float32
  finished_scores: jax.Array  # (B, K) float32, log-prob / length_penalty; NEG_INF = empty
  finished_log_probs: jax.Array  # (B, K) float32


def _live(log_probs: jax.Array) -> jax.Array:
  """Slots holding a real beam rather than a dead or never-used one."""
  return log_probs > NEG_INF / 2


def _gather(x: jax.Array, index: jax.Array) -> jax.Array:
  """x (B, N, ...) and index (B, M) -> x[b, index[b, m]] (B, M, ...)."""
  return jax.vmap(lambda row, idx: row[idx])(x, index)


def _gather_flat(x: jax.Array, index: jax.Array) -> jax.Array:
  """`_gather` for a cache leaf laid out (B * K, ...)."""
  batch, k = index.shape
  return _gather(x.reshape((batch, k) + x.shape[1:]), index).reshape(x.shape)


def beam_search(params, spec: decoders.DecoderSpec, features: jax.Array, *, start_id: int,
                end_id: int, max_length: int, beam_size: int, alpha: float = 0.0,
                rules: tuple | None = None):
  """The `beam_size` best captions per image.

  Args:
    params, spec: the decoder.
    features: (B, P, D) encoder features.
    start_id, end_id: the `<start>` and `<end>` ids.
    max_length: most tokens per caption, `<end>` included.
    beam_size: K.
    alpha: length-penalty exponent (0 = none).
    rules: None, or (no_repeat_ngram, no_consecutive_repeat) (`constraints.py`): banned
      continuations are never taken.

  Returns:
    tokens (B, K, L) int32 best first (`<end>` included, 0 after), scores (B, K)
    (length-penalised), log_probs (B, K) (plain sums of token log-probabilities) and
    attention (B, K, L, P) (the grid weights behind each token).
  """
  batch, positions = features.shape[0], features.shape[1]
  k, length, vocab_size = beam_size, max_length, spec.vocab_size
  context = decoders.repeat_batch(decoders.prepare(params, spec, features), k)  # (B*K, ...)

  def cond(s: BeamState):
    best_alive = jnp.max(s.alive_log_probs, axis=1)  # (B,)
    # A live beam's final score is at most its log-prob now over the largest penalty.
    bound = best_alive / length_penalty(length, alpha)
    can_improve = jnp.any(_live(best_alive) & (bound > s.finished_scores[:, -1]))
    return (s.index < length) & can_improve

  def body(s: BeamState) -> BeamState:
    last = jnp.where(
        s.index == 0, start_id,
        jnp.take_along_axis(s.alive_tokens, jnp.maximum(s.index - 1, 0)[None, None, None],
                            axis=2)[..., 0])  # (B, K)
    logits, cache, attention = decoders.step(params, spec, context, s.cache, last.reshape(-1),
                                             s.index)
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32))
    if rules is not None:
      log_probs = constraints.mask(log_probs, s.alive_tokens.reshape(batch * k, length),
                                   s.index, *rules, fill=NEG_INF)
    log_probs = log_probs.reshape(batch, k, vocab_size)
    candidates = (s.alive_log_probs[:, :, None] + log_probs).reshape(batch, k * vocab_size)
    top_scores, top_ids = jax.lax.top_k(candidates, k)  # (B, K)
    beam, token = top_ids // vocab_size, (top_ids % vocab_size).astype(jnp.int32)
    tokens = _gather(s.alive_tokens, beam).at[:, :, s.index].set(token)  # (B, K, L)
    attention = _gather(s.alive_attention, beam).at[:, :, s.index].set(
        _gather(attention.reshape(batch, k, positions).astype(jnp.float32), beam))
    ended = (token == end_id) & _live(top_scores)

    new_finished = jnp.where(ended, top_scores / length_penalty(s.index + 1, alpha), NEG_INF)
    pool_scores = jnp.concatenate([s.finished_scores, new_finished], axis=1)  # (B, 2K)
    pool_tokens = jnp.concatenate([s.finished_tokens, tokens], axis=1)
    pool_attention = jnp.concatenate([s.finished_attention, attention], axis=1)
    pool_log_probs = jnp.concatenate([s.finished_log_probs, top_scores], axis=1)
    finished_scores, best = jax.lax.top_k(pool_scores, k)
    return BeamState(
        index=s.index + 1,
        alive_tokens=tokens,
        alive_attention=attention,
        # An ended beam's slot dies; dead slots stay dead.
        alive_log_probs=jnp.where(ended | ~_live(top_scores), NEG_INF, top_scores),
        cache=jax.tree.map(lambda x: _gather_flat(x, beam), cache),
        finished_tokens=_gather(pool_tokens, best),
        finished_attention=_gather(pool_attention, best),
        finished_scores=finished_scores,
        finished_log_probs=_gather(pool_log_probs, best),
    )

  # Only beam 0 is live at the start, so the first step does not pick K copies of one word.
  first = jnp.full((batch, k), NEG_INF).at[:, 0].set(0.0)
  init = BeamState(
      index=jnp.zeros((), jnp.int32),
      alive_tokens=jnp.zeros((batch, k, length), jnp.int32),
      alive_attention=jnp.zeros((batch, k, length, positions), jnp.float32),
      alive_log_probs=first,
      cache=decoders.initial_cache(params, spec, context, length),
      finished_tokens=jnp.zeros((batch, k, length), jnp.int32),
      finished_attention=jnp.zeros((batch, k, length, positions), jnp.float32),
      finished_scores=jnp.full((batch, k), NEG_INF),
      finished_log_probs=jnp.full((batch, k), NEG_INF),
  )
  s = jax.lax.while_loop(cond, body, init)

  # Rows with fewer than K finished captions are topped up with live beams (no `<end>`).
  alive_scores = jnp.where(_live(s.alive_log_probs),
                           s.alive_log_probs / length_penalty(s.index, alpha), NEG_INF)
  scores = jnp.concatenate([s.finished_scores, alive_scores], axis=1)
  tokens = jnp.concatenate([s.finished_tokens, s.alive_tokens], axis=1)
  attention = jnp.concatenate([s.finished_attention, s.alive_attention], axis=1)
  log_probs = jnp.concatenate([s.finished_log_probs, s.alive_log_probs], axis=1)
  scores, best = jax.lax.top_k(scores, k)
  return (_gather(tokens, best), scores, _gather(log_probs, best), _gather(attention, best))
