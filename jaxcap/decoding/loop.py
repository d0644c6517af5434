"""Decoding: the one function every caller uses to turn image features into captions.

`decode(params, spec, features, key, options, ...)` runs greedy decoding, top-k/temperature
sampling or beam search for any decoder (`jaxcap.model.decoders`), each inside one compiled
`lax.while_loop` that calls the decoder's `step` over its cache. `sample.py`, `evaluate.py`,
validation during training, `inference.Captioner` and SCST all go through it, with one
description of the options and one set of command-line flags (`DecodeOptions`,
`add_flags`, `options_from_flags`: in `options.py`, which imports no JAX, so the
command lines parse flags instantly).

The greedy/sampling loop is here; beam search is in `beam.py`.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np

from jaxcap.decoding import beam, constraints
from jaxcap.decoding.options import DecodeOptions, add_flags, options_from_flags  # noqa: F401
from jaxcap.model import decoders


TOP_K_BOUND = 64  # one compiled sampler serves every top_k up to this (and 0)


def top_k_bound(top_k: int, vocab_size: int) -> int:
  """The static size of `choose_tokens`' `lax.top_k` for a top_k: TOP_K_BOUND (or the
  vocabulary, if smaller) for every top_k up to it, 0 (the whole vocabulary) and past the
  vocabulary; beyond it the next power of two, so at most log2(V / 64) more programs."""
  bound = TOP_K_BOUND
  while bound < top_k < vocab_size:
    bound *= 2
  return min(bound, vocab_size)


def choose_tokens(logits: jax.Array, key: jax.Array, *, greedy: bool, top_k, temperature,
                  bound: int | None = None) -> jax.Array:
  """Next ids (B,) from logits (B, V): argmax, or a draw from softmax(top-k logits / T).

  `top_k` (0 = the whole vocabulary) and `temperature` may be traced, so one compiled loop
  serves them all: the k-th largest logit is read off `lax.top_k` at the static `bound`
  (at least top_k; default `top_k_bound`) and the logits below it are masked out (ties
  with the k-th are kept); the draw is over all V entries.
  """
  if greedy:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits.astype(jnp.float32) / temperature
  vocab_size = logits.shape[-1]
  if bound is None:
    bound = top_k_bound(int(top_k), vocab_size)
  top_logits, _ = jax.lax.top_k(logits, bound)  # (B, bound), largest first
  kth = jnp.take(top_logits, jnp.clip(top_k, 1, bound) - 1, axis=-1)[:, None]  # (B, 1)
  keep = (top_k <= 0) | (top_k >= vocab_size) | (logits >= kth)
  return jax.random.categorical(key, jnp.where(keep, logits, -jnp.inf),
                                axis=-1).astype(jnp.int32)


@flax.struct.dataclass
class LoopState:
  index: jax.Array  # () int32, the position being generated
  last_tokens: jax.Array  # (B,) int32
  cache: Any  # the decoder's state, leaves (B, ...)
  done: jax.Array  # (B,) bool
  tokens: jax.Array  # (B, L) int32, 0 after `<end>`
  attention: jax.Array  # (B, L, P) float32
  log_probs: jax.Array  # (B,) float32, summed over the chosen tokens


def sample_loop(params, spec: decoders.DecoderSpec, features: jax.Array, key: jax.Array, *,
                start_id: int, end_id: int, max_length: int, greedy: bool, top_k=0,
                temperature=1.0, bound: int | None = None, rules: tuple | None = None):
  """Greedy or sampled captions in one `lax.while_loop`.

  A caption that has produced `<end>` stops changing (its later tokens stay 0; its cache runs
  on, unread: freezing it cost a copy of every cache each step) and the loop exits once every
  caption is done or at `max_length`. Step i draws with `fold_in(key, i)`, so results do not
  depend on when the loop exits. `top_k` and `temperature` may be traced (see
  `choose_tokens`; `bound` >= top_k is static). `rules`: None, or (no_repeat_ngram,
  no_consecutive_repeat), maybe traced (`constraints.py`): the tokens they ban are not
  chosen; log_probs stay the model's own.

  Returns tokens (B, L), attention (B, L, P), log_probs (B,) (see `decode`).
  """
  batch, positions = features.shape[0], features.shape[1]
  context = decoders.prepare(params, spec, features)  # once per image

  def cond(s: LoopState):
    return (s.index < max_length) & ~jnp.all(s.done)

  def body(s: LoopState) -> LoopState:
    logits, cache, attention = decoders.step(params, spec, context, s.cache, s.last_tokens,
                                             s.index)
    allowed = logits if rules is None else constraints.mask(logits, s.tokens, s.index, *rules,
                                                            fill=-jnp.inf)
    chosen = choose_tokens(allowed, jax.random.fold_in(key, s.index), greedy=greedy,
                           top_k=top_k, temperature=temperature, bound=bound)
    chosen = jnp.where(s.done, 0, chosen)  # finished captions only pad
    log_prob = jnp.take_along_axis(jax.nn.log_softmax(logits.astype(jnp.float32)),
                                   chosen[:, None], axis=-1)[:, 0]
    return LoopState(
        index=s.index + 1,
        last_tokens=chosen,
        cache=cache,
        done=s.done | (chosen == end_id),
        tokens=s.tokens.at[:, s.index].set(chosen),
        attention=s.attention.at[:, s.index].set(
            jnp.where(s.done[:, None], 0.0, attention.astype(jnp.float32))),
        log_probs=s.log_probs + jnp.where(s.done, 0.0, log_prob),
    )

  init = LoopState(
      index=jnp.zeros((), jnp.int32),
      last_tokens=jnp.full((batch,), start_id, jnp.int32),
      cache=decoders.initial_cache(params, spec, context, max_length),
      done=jnp.zeros((batch,), bool),
      tokens=jnp.zeros((batch, max_length), jnp.int32),
      attention=jnp.zeros((batch, max_length, positions), jnp.float32),
      log_probs=jnp.zeros((batch,), jnp.float32),
  )
  final = jax.lax.while_loop(cond, body, init)
  return final.tokens, final.attention, final.log_probs


def split_options(options: DecodeOptions, vocab_size: int) -> tuple[dict, dict]:
  """options -> (numbers, structure): what the compiled loop takes as data (top_k,
  temperature, alpha, the repetition rules as arrays) and what shapes it (method, beam size,
  top-k bound, whether any repetition rule is on).

  Compiled with the numbers traced, one program serves every temperature, alpha, n-gram size
  and top_k up to `TOP_K_BOUND`; the seed never enters (it is the key's). Fields a method
  does not read take fixed values, so they do not split programs either.
  """
  sample, beam_search = options.method == "sample", options.method == "beam"
  int32_max = np.iinfo(np.int32).max
  numbers = {"top_k": np.int32(min(options.top_k, int32_max) if sample else 0),
             "temperature": np.float32(options.temperature if sample else 1.0),
             "alpha": np.float32(options.alpha if beam_search else 0.0),
             "no_repeat_ngram": np.int32(min(options.no_repeat_ngram, int32_max)),
             "no_consecutive_repeat": np.bool_(options.no_consecutive_repeat)}
  structure = {"method": options.method,
               "beam_size": options.beam_size if beam_search else 0,
               "bound": top_k_bound(options.top_k, vocab_size) if sample else 0,
               "constrained": options.constrained}
  return numbers, structure


def _decode(params, spec, features, key, numbers: dict, *, method: str, beam_size: int,
            bound: int, constrained: bool, start_id: int, end_id: int, max_length: int):
  """`decode` with the options split (`split_options`): `numbers` may be traced."""
  rules = ((numbers["no_repeat_ngram"], numbers["no_consecutive_repeat"]) if constrained
           else None)
  if method == "beam":
    tokens, _, log_probs, attention = beam.beam_search(
        params, spec, features, start_id=start_id, end_id=end_id, max_length=max_length,
        beam_size=beam_size, alpha=numbers["alpha"], rules=rules)
    return tokens[:, 0], attention[:, 0], log_probs[:, 0]
  return sample_loop(params, spec, features, key, start_id=start_id, end_id=end_id,
                     max_length=max_length, greedy=method == "greedy",
                     top_k=numbers["top_k"], temperature=numbers["temperature"], bound=bound,
                     rules=rules)


def decode(params, spec: decoders.DecoderSpec, features: jax.Array, key: jax.Array,
           options: DecodeOptions, *, start_id: int, end_id: int, max_length: int):
  """Captions for a batch of encoder features, by `options`.

  Args:
    params, spec: the decoder.
    features: (B, P, D) encoder features.
    key: PRNG key (sampling only).
    options: the decoding method and its settings.
    start_id, end_id: the `<start>` and `<end>` ids.
    max_length: most tokens per caption (`<end>` included).

  Returns:
    tokens (B, L) int32 (`<end>` included, 0 after), attention (B, L, P) float32 (the grid
    weights behind each token) and log_probs (B,) (the chosen tokens' summed
    log-probabilities; for beam search, of the best beam).
  """
  numbers, structure = split_options(options, spec.vocab_size)
  return _decode(params, spec, features, key, numbers, **structure, start_id=start_id,
                 end_id=end_id, max_length=max_length)


@functools.partial(jax.jit, static_argnames=("spec", "greedy", "top_k", "temperature"))
def _python_loop_step(params, spec, context, cache, tokens, key, index, *, greedy, top_k,
                      temperature):
  logits, cache, _ = decoders.step(params, spec, context, cache, tokens, index)
  chosen = choose_tokens(logits, jax.random.fold_in(key, index), greedy=greedy, top_k=top_k,
                         temperature=temperature, bound=None if greedy else top_k_bound(
                             top_k, logits.shape[-1]))
  return chosen, cache


def python_loop(params, spec: decoders.DecoderSpec, features: jax.Array, key: jax.Array,
                options: DecodeOptions, *, start_id: int, end_id: int,
                max_length: int) -> np.ndarray:
  """The reference for `sample_loop`: the seed's loop, one jitted step at a time from Python.

  Each step's ids come back to the host, which stops once every caption has produced `<end>`
  (as the seed's `predict_caption` does). Same keys as `sample_loop`, so the same tokens;
  the tests check the compiled loop against it and the benchmarks time it ("a straight
  port of the seed's loop"). Greedy or sampling only.

  Returns tokens (B, L) int32 numpy, 0 after each caption's `<end>`.
  """
  if options.method == "beam" or options.constrained:
    raise ValueError("python_loop is the reference of unconstrained greedy and sampling")
  context = jax.jit(decoders.prepare, static_argnums=1)(params, spec, features)
  cache = decoders.initial_cache(params, spec, context, max_length)
  last = jnp.full((features.shape[0],), start_id, jnp.int32)
  out = np.zeros((features.shape[0], max_length), np.int32)
  done = np.zeros(features.shape[0], bool)
  for i in range(max_length):
    last, cache = _python_loop_step(params, spec, context, cache, last, key, i,
                                    greedy=options.method == "greedy", top_k=options.top_k,
                                    temperature=options.temperature)
    ids = np.asarray(last)  # the host looks at every token, as the seed does
    out[~done, i] = ids[~done]
    done |= ids == end_id
    if done.all():
      break
  return out


FeatureFn = Callable[[Any, jax.Array], jax.Array]


_STATIC = ("spec", "method", "beam_size", "bound", "constrained", "start_id", "end_id",
           "max_length")
_decode_compiled = jax.jit(_decode, static_argnames=_STATIC)


def decode_jit(params, spec, features, key, options, *, start_id, end_id, max_length):
  """`decode`, compiled once per (spec, method, beam size, top-k bound, repetition rules on
  or off, shapes): new temperatures, top_k values (up to `TOP_K_BOUND`), alphas, n-gram sizes
  and seeds compile nothing."""
  numbers, structure = split_options(options, spec.vocab_size)
  return _decode_compiled(params, spec, features, key, numbers, **structure,
                          start_id=start_id, end_id=end_id, max_length=max_length)


@functools.partial(jax.jit, static_argnames=("feature_fn",) + _STATIC)
def _caption_images(feature_fn: FeatureFn, encoder_params, params, spec, images, key,
                    numbers, **static):
  features = feature_fn(encoder_params, images).astype(jnp.float32)
  return _decode(params, spec, features, key, numbers, **static)


def caption_images(feature_fn: FeatureFn, encoder_params, params, spec, images: jax.Array,
                   key: jax.Array, options: DecodeOptions, *, start_id: int, end_id: int,
                   max_length: int):
  """Images (B, H, W, 3) in [0, 1] -> `decode`'s outputs, encoder and loop in one compiled
  call (`feature_fn(encoder_params, images) -> (B, P, D)` is the frozen encoder); compiled
  as `decode_jit` is, once per structure."""
  numbers, structure = split_options(options, spec.vocab_size)
  return _caption_images(feature_fn, encoder_params, params, spec, images, key, numbers,
                         **structure, start_id=start_id, end_id=end_id,
                         max_length=max_length)


def batch_size_bucket(n: int, cap: int) -> int:
  """The compiled batch size for n rows: the next power of two, at most `cap`."""
  size = 1
  while size < n:
    size *= 2
  return max(min(size, cap), 1)


def pad_rows(rows: np.ndarray, size: int) -> np.ndarray:
  """rows (n, ...) -> (size, ...) by repeating the last row (its outputs are dropped)."""
  if len(rows) >= size:
    return rows
  return np.concatenate([rows, np.repeat(rows[-1:], size - len(rows), axis=0)])


def caption_features(params, spec, features, options: DecodeOptions, *, start_id: int,
                     end_id: int, max_length: int, batch_size: int = 128) -> np.ndarray:
  """Tokens (N, L) for features (N, P, D) (any array-like, e.g. a memory map), decoded in
  batches of one compiled shape (the last padded)."""
  key = jax.random.key(options.seed)
  batch_size = batch_size_bucket(len(features), batch_size)
  out = []
  for start in range(0, len(features), batch_size):
    chunk = np.asarray(features[start:start + batch_size], np.float32)
    tokens, _, _ = decode_jit(params, spec, pad_rows(chunk, batch_size),
                              jax.random.fold_in(key, start), options, start_id=start_id,
                              end_id=end_id, max_length=max_length)
    out.append(np.asarray(tokens)[:len(chunk)])
  return np.concatenate(out) if out else np.zeros((0, max_length), np.int32)
