"""Decoding options are data: new temperatures, top_k values, alphas and seeds compile nothing.

`decode_jit` and `caption_images` compile once per (decoder, method, beam size, top-k bound,
shapes); the numbers enter the compiled loop as arrays (as flax's lm1b example passes its
sampling temperature).
"""

import jax
import numpy as np
import pytest
from helpers import END, MAX, START, compile_events, make_model

from jaxcap import decoding
from jaxcap.decoding.options import DecodeOptions


@pytest.fixture(scope="module")
def model():
  return make_model("gru")


def run(model, options, key=jax.random.key(0)):
  spec, params, features = model
  return decoding.decode_jit(params, spec, features, key, options, start_id=START,
                             end_id=END, max_length=MAX)


def test_fifty_new_values_compile_nothing(model):
  for method in ("greedy", "sample", "beam"):  # compiled here, once each
    run(model, DecodeOptions(method))
  rng = np.random.default_rng(0)
  with compile_events() as events:
    for i in range(50):
      options = DecodeOptions(("greedy", "sample", "beam")[i % 3],
                              temperature=float(rng.uniform(0.05, 10)),
                              top_k=int(rng.integers(0, 40)), alpha=float(rng.uniform(0, 2)),
                              seed=int(rng.integers(2**31)))
      jax.block_until_ready(run(model, options, jax.random.key(options.seed)))
  assert events == []
  # The counter does see a compile: a new beam size is a new program.
  with compile_events() as events:
    run(model, DecodeOptions("beam", beam_size=5))
  assert events


def test_traced_values_decode_as_the_same_options_given_alone(model):
  """One compiled program per method gives what a program for those values alone gives."""
  spec, params, features = model
  for options in (DecodeOptions("sample", top_k=3, temperature=0.7),
                  DecodeOptions("sample", top_k=0, temperature=1.3),
                  DecodeOptions("beam", beam_size=3, alpha=0.8)):
    key = jax.random.key(3)
    through_data = run(model, options, key)[0]
    alone = jax.jit(lambda p, f, k, o=options: decoding.decode(  # o is static here
        p, spec, f, k, o, start_id=START, end_id=END, max_length=MAX))(params, features, key)
    np.testing.assert_array_equal(through_data, alone[0])


@pytest.mark.parametrize("top_k,vocab,bound", [(0, 19, 19), (5, 19, 19), (5, 1000, 64),
                                               (64, 1000, 64), (65, 1000, 128),
                                               (999, 1000, 1000), (5000, 1000, 64)])
def test_top_k_bound(top_k, vocab, bound):  # past the vocabulary: no cut, as 0
  assert decoding.top_k_bound(top_k, vocab) == bound


def test_top_k_through_the_bound_keeps_exactly_the_k_largest():
  logits = jax.random.normal(jax.random.key(0), (4, 300))
  keys = jax.random.split(jax.random.key(1), 2000)
  for top_k in (1, 7, 64, 100):
    draws = jax.vmap(lambda k, t=top_k: decoding.choose_tokens(
        logits, k, greedy=False, top_k=np.int32(t), temperature=np.float32(5.0),
        bound=decoding.top_k_bound(t, 300)))(keys)  # (2000, 4)
    allowed = np.argsort(-np.asarray(logits), axis=1)[:, :top_k]
    for row in range(4):
      assert set(np.asarray(draws[:, row])) <= set(allowed[row])
    if top_k >= 7:  # a hot temperature reaches well into the k allowed
      assert len(set(np.asarray(draws[:, 0]))) > top_k // 2
