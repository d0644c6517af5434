"""Captions per second: jaxcap's compiled loop vs the seed's Keras loop vs a Python loop.

All three use the same weights (the seed's Keras model, converted with `seed_keras.to_jaxcap`),
the same features and top-k sampling as the seed (k = 10, temperature 1). Random weights rarely
sample `<end>`, so every caption runs to the length limit: 64 (the seed's) or 13 (a caption of
about 12 words, where `<end>` would arrive).

    python bench/decode.py [--quick]
"""

from __future__ import annotations

import functools

import common  # sets sys.path and the Keras backend
from common import row, timeit

import jax
import jax.numpy as jnp
import numpy as np

from jaxcap import decoder, generate, seed_keras

VOCAB, UNITS, POSITIONS, FEATURE_DIM = 20000, 512, 64, 1536
START, END = 2, 3


def seed_loop(keras, encoder_dense, step_model, features, max_length):
  """The seed's `predict_caption` loop over one batch: a Keras call and a host round trip
  per token, top-10 then categorical, stop at <end>."""
  ops = keras.ops
  grid = encoder_dense(features)
  batch = features.shape[0]
  state = ops.zeros((batch, UNITS))
  dec_input = ops.convert_to_tensor(np.full((batch, 1), START, np.int32))
  done = np.zeros(batch, bool)
  out = []
  for _ in range(max_length):
    logits, state = step_model([dec_input, state, grid])
    top_logits, top_ids = ops.top_k(logits[:, 0], k=10, sorted=False)
    chosen = keras.random.categorical(top_logits, 1)
    ids = np.take_along_axis(np.asarray(top_ids), np.asarray(chosen), axis=1)[:, 0]
    out.append(ids)
    done |= ids == END
    if done.all():
      break
    dec_input = ops.convert_to_tensor(ids[:, None].astype(np.int32))
  return np.stack(out, 1)


def python_loop_factory(params):
  """A Python loop around a jitted jaxcap step: what a straight port of the seed would do."""

  @jax.jit
  def one(params, grid, tokens, hidden, key):
    logits, hidden, _ = decoder.step(params, grid, tokens, hidden)
    return generate.choose_tokens(logits, key, greedy=False, top_k=10, temperature=1.0), hidden

  encode = jax.jit(decoder.encode)
  initial = jax.jit(decoder.initial_hidden)

  def run(features, max_length, key):
    grid = encode(params, features)
    hidden = initial(params, grid)
    tokens = jnp.full((features.shape[0],), START, jnp.int32)
    out = []
    for i in range(max_length):
      tokens, hidden = one(params, grid, tokens, hidden, jax.random.fold_in(key, i))
      ids = np.asarray(tokens)  # the host looks at each token, as the seed does
      out.append(ids)
      if (ids == END).all():
        break
    return np.stack(out, 1)

  return run


def run(quick: bool = False) -> list[dict]:
  train_model, step_model = seed_keras.build_models(
      vocab_size=VOCAB, units=UNITS, positions=POSITIONS, feature_dim=FEATURE_DIM,
      max_length=64)
  import keras  # pylint: disable=g-import-not-at-top
  params = jax.tree.map(jnp.asarray, seed_keras.to_jaxcap(train_model))
  encoder_dense = train_model.get_layer("encoder_dense")
  python_loop = python_loop_factory(params)
  rows = []
  repeat = 2 if quick else 5
  for batch in (1, 64):
    features = np.random.default_rng(0).normal(size=(batch, POSITIONS, FEATURE_DIM)).astype(
        np.float32)
    for max_length in (64, 13):
      compiled = jax.jit(functools.partial(
          generate.generate, start_id=START, end_id=END, max_length=max_length, top_k=10))
      key = jax.random.key(0)
      t_ours = timeit(lambda: compiled(params, features, key)[0], repeat=repeat)
      t_loop = timeit(lambda: python_loop(features, max_length, key), repeat=repeat)
      seed_repeat = 1 if quick and batch == 64 else repeat
      t_seed = timeit(lambda: seed_loop(keras, encoder_dense, step_model, features, max_length),
                      repeat=seed_repeat)
      config = (f"batch {batch}, max length {max_length}, vocab {VOCAB}, units {UNITS}, "
                f"{POSITIONS} positions, top-10 sampling")
      rows.append(row("decode vs seed Keras loop", config, batch / t_ours, batch / t_seed,
                      "captions/s"))
      rows.append(row("decode vs Python loop of jitted steps", config, batch / t_ours,
                      batch / t_loop, "captions/s"))
  return rows


if __name__ == "__main__":
  common.main(run)
