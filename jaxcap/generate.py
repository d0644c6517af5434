"""Caption generation compiled whole: greedy and top-k/temperature sampling in one while_loop.

The seed samples with a Python loop that calls the one-step decoder once per token. Here the
loop is a `lax.while_loop` over the whole batch: a caption that has produced `<end>` stops
changing (its later positions stay padding), and the loop exits as soon as every caption in
the batch is done, or at `max_length`.
"""

from __future__ import annotations

import functools
from typing import Callable

import flax
import jax
import jax.numpy as jnp

from jaxcap import decoder


@flax.struct.dataclass
class LoopState:
  index: jax.Array  # () int32, the position being generated
  last_tokens: jax.Array  # (B,) int32
  hidden: jax.Array  # (B, U)
  done: jax.Array  # (B,) bool
  tokens: jax.Array  # (B, L) int32, 0 after `<end>`
  attention: jax.Array  # (B, L, P) float32


def choose_tokens(
    logits: jax.Array, key: jax.Array, *, greedy: bool, top_k: int, temperature: float
) -> jax.Array:
  """Next ids (B,) from logits (B, V).

  Sampling is the seed's: keep the `top_k` largest logits and draw from a categorical over
  them, after dividing by `temperature`. `top_k <= 0` samples from the whole vocabulary.
  """
  if greedy:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits.astype(jnp.float32) / temperature
  if 0 < top_k < logits.shape[-1]:
    top_logits, top_ids = jax.lax.top_k(logits, top_k)  # (B, k)
    choice = jax.random.categorical(key, top_logits, axis=-1)  # (B,)
    return jnp.take_along_axis(top_ids, choice[:, None], axis=-1)[:, 0].astype(jnp.int32)
  return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def generate(
    params: decoder.Params,
    features: jax.Array,
    key: jax.Array,
    *,
    start_id: int,
    end_id: int,
    max_length: int,
    greedy: bool = False,
    top_k: int = 10,
    temperature: float = 1.0,
) -> tuple[jax.Array, jax.Array]:
  """Generates captions for a batch of encoder features.

  Args:
    params: decoder parameters.
    features: (B, P, D) encoder features.
    key: PRNG key; step `i` uses `fold_in(key, i)`, so results do not depend on batch size
      bookkeeping or on when the loop exits.
    start_id, end_id: the `<start>` and `<end>` ids.
    max_length: most tokens generated per caption (`<end>` included).
    greedy, top_k, temperature: see `choose_tokens`.

  Returns:
    tokens (B, max_length) int32 — generated ids, `<end>` included, 0 afterwards — and
    attention (B, max_length, P) float32, each generated word's weights over the grid.
  """
  batch, positions = features.shape[0], features.shape[1]
  grid = decoder.encode(params, features)  # (B, P, U), once per image

  def cond(state: LoopState):
    return (state.index < max_length) & ~jnp.all(state.done)

  def body(state: LoopState) -> LoopState:
    logits, hidden, attention = decoder.step(params, grid, state.last_tokens, state.hidden)
    chosen = choose_tokens(
        logits, jax.random.fold_in(key, state.index),
        greedy=greedy, top_k=top_k, temperature=temperature,
    )
    chosen = jnp.where(state.done, 0, chosen)  # finished captions only pad
    attention = jnp.where(state.done[:, None], 0.0, attention.astype(jnp.float32))
    return LoopState(
        index=state.index + 1,
        last_tokens=chosen,
        # A finished caption's state is frozen so it "stops changing".
        hidden=jnp.where(state.done[:, None], state.hidden, hidden),
        done=state.done | (chosen == end_id),
        tokens=state.tokens.at[:, state.index].set(chosen),
        attention=state.attention.at[:, state.index].set(attention),
    )

  init = LoopState(
      index=jnp.zeros((), jnp.int32),
      last_tokens=jnp.full((batch,), start_id, jnp.int32),
      hidden=decoder.initial_hidden(params, grid),
      done=jnp.zeros((batch,), bool),
      tokens=jnp.zeros((batch, max_length), jnp.int32),
      attention=jnp.zeros((batch, max_length, positions), jnp.float32),
  )
  final = jax.lax.while_loop(cond, body, init)
  return final.tokens, final.attention


FeatureFn = Callable[[object, jax.Array], jax.Array]


@functools.partial(
    jax.jit,
    static_argnames=("feature_fn", "start_id", "end_id", "max_length", "greedy", "top_k",
                     "temperature"),
)
def caption_images(
    feature_fn: FeatureFn,
    encoder_params,
    params: decoder.Params,
    images: jax.Array,
    key: jax.Array,
    *,
    start_id: int,
    end_id: int,
    max_length: int,
    greedy: bool = False,
    top_k: int = 10,
    temperature: float = 1.0,
) -> tuple[jax.Array, jax.Array]:
  """Images (B, H, W, 3) in [0, 1] -> `generate`'s (tokens, attention), in one compiled call.

  `feature_fn(encoder_params, images) -> (B, P, D)` is the frozen encoder; it and the
  decoding loop compile together, so a batch of images costs one device round trip.
  """
  features = feature_fn(encoder_params, images)
  return generate(
      params, features.astype(jnp.float32), key, start_id=start_id, end_id=end_id,
      max_length=max_length, greedy=greedy, top_k=top_k, temperature=temperature,
  )
