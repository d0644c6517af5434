"""The one decoding path: greedy, sampling and beam search for every decoder.

The compiled loops are checked against a plain Python loop over the same `decoders.step`.
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import B, D, END, MAX, P, START, U, V, make_model  # noqa: F401

from jaxcap import decoding
from jaxcap.decoding import beam
from jaxcap.decoding.options import DecodeOptions
from jaxcap.model import decoders

@pytest.fixture(scope="module", params=decoders.KINDS)
def model(request):
  return make_model(request.param)


def run(model, options, key=jax.random.key(0)):
  spec, params, features = model
  return decoding.decode_jit(params, spec, features, key, options, start_id=START,
                             end_id=END, max_length=MAX)


def sequence_log_prob(model, tokens):
  """Teacher-forced sum of log-probabilities of each (B, L) caption up to its <end>."""
  spec, params, features = model
  inputs = jnp.concatenate([jnp.full((tokens.shape[0], 1), START), tokens[:, :-1]], axis=1)
  logits, _ = decoders.teacher_forced_logits(params, spec, features, inputs)
  logp = jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[..., None], axis=-1)[..., 0]
  ended_before = jnp.cumsum(tokens == END, axis=1) - (tokens == END)
  return jnp.sum(jnp.where(ended_before == 0, logp, 0.0), axis=1)


def ended_rows(tokens):
  """(rows that produced <end>, and each of them pads with 0 after it)."""
  tokens = np.asarray(tokens).reshape(-1, MAX)
  ended = [row for row in tokens if (row == END).any()]
  return len(ended), all((row[np.flatnonzero(row == END)[0] + 1:] == 0).all() for row in ended)


@pytest.mark.slow
@pytest.mark.parametrize("method,top_k,temperature", [
    ("greedy", 0, 1.0), ("sample", 10, 1.0), ("sample", 3, 0.7), ("sample", 0, 1.3)])
def test_loop_equals_python_reference(model, method, top_k, temperature):
  key = jax.random.key(7)
  tokens, attention, log_probs = run(
      model, DecodeOptions(method, top_k=top_k, temperature=temperature), key)
  spec, params, features = model
  expected = decoding.python_loop(params, spec, features, key,
                                  DecodeOptions(method, top_k=top_k, temperature=temperature),
                                  start_id=START, end_id=END, max_length=MAX)
  np.testing.assert_array_equal(np.asarray(tokens), expected)
  np.testing.assert_allclose(log_probs, sequence_log_prob(model, tokens), atol=1e-4)
  # Attention of generated positions sums to one; padding positions carry none.
  generated = np.cumsum(expected == END, axis=1) - (expected == END) == 0
  sums = np.asarray(attention).sum(-1)
  np.testing.assert_allclose(sums[generated], 1.0, atol=1e-5)
  np.testing.assert_allclose(sums[~generated], 0.0, atol=1e-6)


@pytest.mark.slow
def test_end_masking_with_some_rows_finished_and_some_not(model):
  spec, params, features = model
  # Bias <end> so that it wins the first step for about half of the images.
  context = decoders.prepare(params, spec, features)
  first, _, _ = decoders.step(params, spec, context,
                              decoders.initial_cache(params, spec, context, MAX),
                              jnp.full((B,), START), 0)
  gap = jnp.max(first.at[:, END].set(-jnp.inf), axis=1) - first[:, END]
  params = jax.tree.map(lambda x: x, params)
  params["logits"]["bias"] = params["logits"]["bias"].at[END].add(jnp.median(gap) + 1e-3)
  for method in ("greedy", "beam"):
    tokens, _, _ = run((spec, params, features), DecodeOptions(method, beam_size=2))
    tokens = np.asarray(tokens)
    ended, padded = ended_rows(tokens)
    if method == "greedy":  # (beam search rightly prefers the short caption everywhere)
      assert (tokens[:, 0] == END).any() and (tokens[:, 0] != END).any()
    assert 1 <= ended and padded, method
    assert (tokens[tokens[:, 0] == END, 1:] == 0).all(), method


@pytest.mark.slow
def test_beam_one_equals_greedy(model):
  greedy, _, _ = run(model, DecodeOptions("greedy"))
  beam1, _, _ = run(model, DecodeOptions("beam", beam_size=1))
  np.testing.assert_array_equal(beam1, greedy)


@pytest.mark.slow
@pytest.mark.parametrize("k", [2, 4])
def test_beam_never_worse_than_greedy(model, k):
  spec, params, features = model
  tokens, scores, log_probs, attention = beam.beam_search(
      params, spec, features, start_id=START, end_id=END, max_length=MAX, beam_size=k)
  greedy, _, _ = run(model, DecodeOptions("greedy"))
  greedy_lp = sequence_log_prob(model, greedy)
  best_lp = sequence_log_prob(model, tokens[:, 0])
  np.testing.assert_allclose(best_lp, log_probs[:, 0], atol=1e-4)  # reported = recomputed
  assert (np.asarray(best_lp) >= np.asarray(greedy_lp) - 1e-5).all()
  assert (np.diff(np.asarray(scores), axis=1) <= 1e-6).all()  # best first
  if k == 4:  # wide enough to find better captions than greedy for some image
    assert (np.asarray(best_lp) > np.asarray(greedy_lp) + 1e-4).any()
  # The attention that comes back belongs to the returned tokens.
  _, teacher_attention = decoders.teacher_forced(
      params, spec, features,
      jnp.concatenate([jnp.full((B, 1), START), tokens[:, 0, :-1]], axis=1))
  first_word = np.asarray(attention[:, 0, 0])
  np.testing.assert_allclose(first_word, teacher_attention[:, 0], atol=1e-5)


@pytest.mark.slow
def test_length_penalty_is_applied():
  """Beam-search logic, the same for every decoder; checked on the one (the GRU) whose
  random initialisation finishes captions at several lengths."""
  spec, base, features = make_model("gru")
  checked = 0
  for end_bias in (0.0, -1.0, 1.0, -2.0, 2.0):  # until some finished captions are longer than 1
    params = jax.tree.map(lambda x: x, base)
    params["logits"]["bias"] = params["logits"]["bias"].at[END].add(end_bias)
    search = lambda alpha: beam.beam_search(params, spec, features, start_id=START,
                                            end_id=END, max_length=MAX, beam_size=4,
                                            alpha=alpha)
    tokens, scores, log_probs, _ = search(2.0)
    lengths = (np.asarray(tokens) != 0).sum(-1)
    finished = (np.asarray(tokens) == END).any(-1)
    if not (lengths[finished] > 1).any():
      continue
    checked += 1
    penalty = ((5.0 + lengths) / 6.0) ** 2.0
    np.testing.assert_allclose(np.asarray(scores)[finished],
                               (np.asarray(log_probs) / penalty)[finished], rtol=1e-5)
    assert (np.diff(np.asarray(scores), axis=1) <= 1e-6).all()  # ranked by penalised score
    _, plain_scores, _, _ = search(0.0)
    assert not np.allclose(plain_scores, scores)
  assert checked


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_one_while_loop_in_jaxpr(model, method):
  spec, params, features = model
  jaxpr = str(jax.make_jaxpr(lambda p, f: decoding.decode(
      p, spec, f, jax.random.key(0), DecodeOptions(method), start_id=START, end_id=END,
      max_length=MAX))(params, features))
  assert jaxpr.count("while[") == 1


@pytest.mark.slow
def test_early_exit_when_all_done(model, monkeypatch):
  """With <end> forced, the loop must stop after one iteration, not run MAX steps."""
  spec, params, features = model
  forced = jax.tree.map(lambda x: x, params)
  forced["logits"]["bias"] = forced["logits"]["bias"].at[END].set(1e4)
  calls = []
  real_step = decoders.step

  def counting_step(*args):
    jax.debug.callback(lambda: calls.append(1))
    return real_step(*args)

  monkeypatch.setattr(decoders, "step", counting_step)
  tokens, _, _ = decoding.decode(forced, spec, features, jax.random.key(0),
                                 DecodeOptions("greedy"), start_id=START, end_id=END,
                                 max_length=MAX)
  jax.block_until_ready(tokens)
  assert (np.asarray(tokens)[:, 0] == END).all()
  assert len(calls) == 1


@pytest.mark.slow
@pytest.mark.parametrize("top_k,temperature", [(3, 1.0), (4, 0.5), (0, 2.0)])
def test_sampling_frequencies_follow_softmax_of_top_k_over_temperature(top_k, temperature):
  logits = jnp.array([[2.0, 1.0, 0.5, 0.0, -1.0, 1.5]])
  n = 20000
  keys = jax.random.split(jax.random.key(0), n)
  draws = jax.vmap(lambda k: decoding.choose_tokens(logits, k, greedy=False, top_k=top_k,
                                                    temperature=temperature))(keys)[:, 0]
  counts = np.bincount(np.asarray(draws), minlength=logits.shape[1]) / n
  expected = np.asarray(logits[0]) / temperature
  if top_k:
    expected = np.where(np.asarray(logits[0]) >= np.sort(np.asarray(logits[0]))[-top_k],
                        expected, -np.inf)
  expected = np.exp(expected - expected.max())
  expected /= expected.sum()
  np.testing.assert_allclose(counts, expected, atol=0.015)


@pytest.mark.slow
def test_caption_images_compiles_encoder_and_loop_together(model):
  spec, params, _ = model
  w = jax.random.normal(jax.random.key(5), (3, D))

  def feature_fn(enc_params, images):  # a toy frozen encoder with a telltale op (cumsum)
    b, h, wd, c = images.shape
    return jnp.cumsum(images.reshape(b, h * wd, c), axis=1) @ enc_params

  images = jax.random.uniform(jax.random.key(6), (B, 2, 3, 3))
  options = DecodeOptions("greedy")
  tokens, _, _ = decoding.caption_images(feature_fn, w, params, spec, images,
                                         jax.random.key(0), options, start_id=START,
                                         end_id=END, max_length=MAX)
  direct, _, _ = decoding.decode(params, spec, feature_fn(w, images), jax.random.key(0),
                                 options, start_id=START, end_id=END, max_length=MAX)
  np.testing.assert_array_equal(tokens, direct)
  outer = jax.make_jaxpr(lambda i: decoding.caption_images(
      feature_fn, w, params, spec, i, jax.random.key(0), options, start_id=START,
      end_id=END, max_length=MAX))(images).jaxpr
  (call,) = [e for e in outer.eqns if "jaxpr" in e.params]  # one compiled call ...
  inner = str(call.params["jaxpr"])
  assert "cumsum" in inner and "while[" in inner  # ... holding the encoder and the loop


@pytest.mark.slow
def test_caption_features_pads_the_last_batch(model):
  spec, params, features = model
  whole, _, _ = run(model, DecodeOptions("greedy"))
  chunked = decoding.caption_features(params, spec, np.asarray(features)[:7],
                                      DecodeOptions("greedy"), start_id=START, end_id=END,
                                      max_length=MAX, batch_size=4)
  np.testing.assert_array_equal(chunked, np.asarray(whole)[:7])


@pytest.mark.parametrize("bad", [dict(method="nucleus"), dict(top_k=-3),
                                 dict(temperature=float("nan")), dict(temperature=0.0),
                                 dict(beam_size=0), dict(alpha=-1.0)])
def test_bad_options_are_refused(bad):
  with pytest.raises(ValueError, match=next(iter(bad)) if "method" not in bad else "method"):
    DecodeOptions(**bad)


def test_flags_over_the_config_default():
  parser = argparse.ArgumentParser()
  decoding.add_flags(parser)
  config_default = DecodeOptions("sample", top_k=10)
  get = lambda *a: decoding.options_from_flags(parser.parse_args(list(a)), config_default)
  assert get() == config_default
  assert get("--greedy").method == "greedy"
  assert get("--beam_size", "5") == DecodeOptions("beam", top_k=10, beam_size=5)
  assert get("--top_k", "0").top_k == 0
  with pytest.raises(ValueError):
    get("--greedy", "--decoding", "beam")
  with pytest.raises(ValueError, match="temperature"):
    get("--temperature", "nan")
