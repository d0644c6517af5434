"""Decoding that does not stutter: no repeated n-grams, no word twice in a row, for greedy,
sampling and beam search (jaxcap/decoding/constraints.py)."""

import argparse
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import END, MAX, START, V, make_model

from jaxcap import decoding
from jaxcap.decoding import constraints
from jaxcap.decoding import options as decode_options
from jaxcap.decoding.options import DecodeOptions
from jaxcap.model import decoders

LOOPY = 5  # the token the stuttering model below prefers everywhere


def banned_reference(row, index, n, consecutive):
  """The banned next tokens of one caption, by brute force."""
  seq = [int(t) for t in row[:index]]
  banned = set()
  if n >= 1 and len(seq) >= n - 1:
    prefix = tuple(seq[len(seq) - (n - 1):]) if n > 1 else ()
    for end in range(n - 1, len(seq)):
      if tuple(seq[end - (n - 1):end]) == prefix:
        banned.add(seq[end])
  if consecutive and seq:
    banned.add(seq[-1])
  return banned


def test_banned_tokens_match_brute_force():
  rng = np.random.default_rng(0)
  tokens = rng.integers(4, 8, size=(6, 12)).astype(np.int32)  # few words: many repeats
  fn = jax.jit(constraints.banned_tokens, static_argnums=2)
  seen_some = False
  for index, n, consecutive in itertools.product(range(12), range(5), (False, True)):
    got = np.asarray(fn(jnp.asarray(tokens), jnp.int32(index), 8, jnp.int32(n),
                        jnp.bool_(consecutive)))
    for b in range(len(tokens)):
      expected = banned_reference(tokens[b], index, n, consecutive)
      assert set(np.flatnonzero(got[b])) == expected, (b, index, n, consecutive)
      seen_some |= bool(expected)
  assert seen_some


def stuttering_model(kind):
  """make_model's decoder with LOOPY the likeliest word everywhere and <end> unlikely."""
  spec, params, features = make_model(kind)
  bias = params["logits"]["bias"].at[LOOPY].add(30.0).at[END].set(-30.0)
  params["logits"] = dict(params["logits"], bias=bias)
  return spec, params, features


def run(model, options, key=jax.random.key(0)):
  spec, params, features = model
  tokens, _, log_probs = decoding.decode_jit(params, spec, features, key, options,
                                             start_id=START, end_id=END, max_length=MAX)
  return np.asarray(tokens), np.asarray(log_probs)


def caption(row):
  row = list(row)
  return row[:row.index(END)] if END in row else row


def ngrams(words, n):
  return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


@pytest.mark.parametrize("kind,method", [
    pytest.param(kind, method, marks=() if (kind, method) == ("gru", "greedy")
                 else pytest.mark.slow)  # each compiles five loops
    for kind in decoders.KINDS for method in ("greedy", "sample", "beam")])
def test_constrained_decoding_never_repeats(kind, method):
  model = stuttering_model(kind)
  plain, _ = run(model, DecodeOptions(method, top_k=3, beam_size=3))
  assert all(caption(r)[:2] == [LOOPY, LOOPY] for r in plain)  # it does stutter unasked
  for n, consecutive in ((2, False), (0, True), (1, False), (3, True)):
    tokens, log_probs = run(model, DecodeOptions(method, top_k=3, beam_size=3,
                                                 no_repeat_ngram=n,
                                                 no_consecutive_repeat=consecutive))
    assert np.isfinite(log_probs).all()
    for row in tokens:
      words = caption(row)
      assert len(words) >= 2
      if n:
        assert len(set(ngrams(words, n))) == len(ngrams(words, n)), (n, words)
      if consecutive:
        assert all(a != b for a, b in zip(words, words[1:])), words


def test_constrained_greedy_equals_a_python_loop():
  """Greedy with the rules is argmax over the words the rules allow, step by step; the log
  probabilities are the model's own (teacher-forced)."""
  spec, params, features = model = stuttering_model("gru")
  n = 2
  tokens, log_probs = run(model, DecodeOptions("greedy", no_repeat_ngram=n,
                                               no_consecutive_repeat=True))
  context = decoders.prepare(params, spec, features)
  cache = decoders.initial_cache(params, spec, context, MAX)
  last = jnp.full((features.shape[0],), START)
  out = np.zeros((features.shape[0], MAX), np.int32)
  done = np.zeros(features.shape[0], bool)
  for i in range(MAX):
    logits, cache, _ = decoders.step(params, spec, context, cache, last, i)
    logits = np.asarray(logits, np.float64)
    for b in range(len(out)):
      logits[b, list(banned_reference(out[b], i, n, True))] = -np.inf
    chosen = logits.argmax(-1)
    out[~done, i] = chosen[~done]
    done |= chosen == END
    last = jnp.asarray(chosen, jnp.int32)
  np.testing.assert_array_equal(tokens, out)
  # The model's log-probability of each caption, not the renormalised one.
  inputs = jnp.concatenate([jnp.full((len(out), 1), START), jnp.asarray(out[:, :-1])], axis=1)
  logits, _ = decoders.teacher_forced_logits(params, spec, features, inputs)
  logp = np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)), out[..., None], -1)[..., 0]
  ended_before = np.cumsum(out == END, axis=1) - (out == END)
  total = np.where(ended_before == 0, logp, 0.0).sum(1)
  np.testing.assert_allclose(log_probs, total, rtol=1e-4, atol=1e-3)


def test_rules_are_data_and_off_by_default():
  numbers, structure = decoding.split_options(DecodeOptions(), V)
  assert not structure["constrained"] and numbers["no_repeat_ngram"] == 0
  # Every n shares one program; only on/off differs.
  shapes = {decoding.split_options(DecodeOptions(no_repeat_ngram=n), V)[1]["constrained"]
            for n in (1, 2, 3, 7)}
  assert shapes == {True}
  assert "no repeated 3-gram" in DecodeOptions(no_repeat_ngram=3).describe()
  assert DecodeOptions().describe() == "greedy"
  with pytest.raises(ValueError, match="no_repeat_ngram"):
    DecodeOptions(no_repeat_ngram=-1)
  with pytest.raises(ValueError, match="no_consecutive_repeat"):
    DecodeOptions(no_consecutive_repeat=1)


def test_flags():
  p = argparse.ArgumentParser()
  decode_options.add_flags(p)
  args = p.parse_args(["--no_repeat_ngram", "3", "--no_consecutive_repeat"])
  options = decode_options.options_from_flags(args, DecodeOptions())
  assert (options.no_repeat_ngram, options.no_consecutive_repeat) == (3, True)
  args = p.parse_args([])
  assert decode_options.options_from_flags(args, DecodeOptions(no_repeat_ngram=2)) == \
      DecodeOptions(no_repeat_ngram=2)  # the config's value stays unless a flag is given


def test_server_parses_the_rules():
  from jaxcap.serving import app  # pylint: disable=g-import-not-at-top
  options = app.parse_options({"method": "beam", "no_repeat_ngram": "2",
                               "no_consecutive_repeat": "1"}, V)
  assert (options.no_repeat_ngram, options.no_consecutive_repeat) == (2, True)
  assert app.describe(options)["no_repeat_ngram"] == 2
  assert "no_repeat_ngram" not in app.describe(DecodeOptions())
  with pytest.raises(ValueError, match="no_repeat_ngram"):
    app.parse_options({"no_repeat_ngram": "99"}, V)
