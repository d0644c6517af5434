"""Repetition constraints shared by greedy, sampling and beam search: captions that do not
stutter ("a a ...", "a two two flag").

Two rules, each optional: no n-gram of size `no_repeat_ngram` twice within a caption (as
fairseq's and Hugging Face's `no_repeat_ngram_size`; 1 = no word twice at all), and no token
twice in a row (`no_consecutive_repeat`). Both are data to the compiled loops (traced
arrays), so one program serves every n; only whether any rule is on at all splits programs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def banned_tokens(tokens: jax.Array, index: jax.Array, vocab_size: int, no_repeat_ngram,
                  no_consecutive_repeat) -> jax.Array:
  """Which next tokens would break a rule: (B, V) bool.

  Args:
    tokens: (B, L) int, the caption so far in positions < `index` (the rest is ignored).
    index: () int, the position about to be generated.
    vocab_size: V.
    no_repeat_ngram: () int, n (0 = off). The token at `index` is banned if it would end an
      n-gram that already occurs in positions < `index`.
    no_consecutive_repeat: () bool: ban the token at `index` - 1.
  """
  batch, length = tokens.shape
  n = jnp.asarray(no_repeat_ngram, jnp.int32)
  j = jnp.arange(length)[None, :]  # (1, L): where an earlier n-gram would end
  m = jnp.arange(1, length)[:, None]  # (L-1, 1): how far back its other n - 1 tokens lie
  # earlier[b, m, j] = tokens[b, j - m]; current[b, m] = tokens[b, index - m].
  earlier = jnp.take(tokens, jnp.clip(j - m, 0, length - 1), axis=1)  # (B, L-1, L)
  current = jnp.take(tokens, jnp.clip(index - m[:, 0], 0, length - 1), axis=1)  # (B, L-1)
  same = (earlier == current[:, :, None]) | (m >= n)[None]  # only the n - 1 before count
  ends = jnp.all(same, axis=1) & (j < index) & (j >= n - 1) & (index >= n - 1) & (n >= 1)
  rows = jnp.arange(batch)[:, None]
  banned = jnp.zeros((batch, vocab_size), bool).at[rows, tokens].max(ends)
  last = jnp.take(tokens, jnp.maximum(index - 1, 0), axis=1)  # (B,)
  repeat = jnp.asarray(no_consecutive_repeat, bool) & (index >= 1)
  return banned | (jax.nn.one_hot(last, vocab_size, dtype=bool) & repeat)


def mask(values: jax.Array, tokens: jax.Array, index: jax.Array, no_repeat_ngram,
         no_consecutive_repeat, fill) -> jax.Array:
  """values (B, V) (logits or log-probabilities) with the banned tokens set to `fill`."""
  banned = banned_tokens(tokens, index, values.shape[-1], no_repeat_ngram,
                         no_consecutive_repeat)
  return jnp.where(banned, jnp.asarray(fill, values.dtype), values)
