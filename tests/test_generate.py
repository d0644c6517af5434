"""The compiled generation loop against a plain Python loop over the same one-step decoder."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcap import decoder, generate

V, U, P, D, B, MAX = 23, 16, 6, 10, 5, 12
START, END = 2, 3


@pytest.fixture(scope="module")
def model():
  params = decoder.init(jax.random.key(0), vocab_size=V, units=U, feature_dim=D)
  # Make <end> likely enough that some captions finish early and some do not.
  params["logits"]["bias"] = params["logits"]["bias"].at[END].set(1.5)
  features = jax.random.normal(jax.random.key(1), (B, P, D))
  return params, features


def python_reference(params, features, key, *, greedy, top_k, temperature):
  """The seed's loop: one step at a time from Python, stop a caption at <end>."""
  grid = decoder.encode(params, features)
  hidden = decoder.initial_hidden(params, grid)
  last = jnp.full((B,), START, jnp.int32)
  out = np.zeros((B, MAX), np.int32)
  done = np.zeros(B, bool)
  for i in range(MAX):
    logits, hidden, _ = decoder.step(params, grid, last, hidden)
    chosen = np.asarray(generate.choose_tokens(
        logits, jax.random.fold_in(key, i), greedy=greedy, top_k=top_k,
        temperature=temperature))
    for b in range(B):
      if not done[b]:
        out[b, i] = chosen[b]
        done[b] = chosen[b] == END
    last = jnp.asarray(chosen)
    if done.all():
      break
  return out


@pytest.mark.parametrize("greedy,top_k,temperature", [
    (True, 0, 1.0), (False, 10, 1.0), (False, 3, 0.7), (False, 0, 1.3)])
def test_loop_equals_python_reference(model, greedy, top_k, temperature):
  params, features = model
  key = jax.random.key(7)
  run = jax.jit(lambda p, f, k: generate.generate(
      p, f, k, start_id=START, end_id=END, max_length=MAX, greedy=greedy, top_k=top_k,
      temperature=temperature))
  tokens, attention = run(params, features, key)
  expected = python_reference(params, features, key, greedy=greedy, top_k=top_k,
                              temperature=temperature)
  np.testing.assert_array_equal(np.asarray(tokens), expected)
  # Attention of generated positions sums to one; padding positions carry none.
  generated = np.cumsum(np.asarray(tokens) == END, axis=1) - (np.asarray(tokens) == END) == 0
  sums = np.asarray(attention).sum(-1)
  np.testing.assert_allclose(sums[generated], 1.0, atol=1e-5)
  np.testing.assert_allclose(sums[~generated], 0.0, atol=1e-6)


def test_finished_captions_pad_and_some_finish(model):
  params, features = model
  tokens, _ = generate.generate(params, features, jax.random.key(3), start_id=START,
                                end_id=END, max_length=MAX)
  tokens = np.asarray(tokens)
  finished = 0
  for row in tokens:
    ends = np.flatnonzero(row == END)
    if len(ends):
      finished += 1
      assert (row[ends[0] + 1:] == 0).all()
  assert finished >= 1


def test_jaxpr_has_one_while_loop(model):
  params, features = model
  jaxpr = jax.make_jaxpr(lambda p, f, k: generate.generate(
      p, f, k, start_id=START, end_id=END, max_length=MAX))(params, features, jax.random.key(0))
  text = str(jaxpr)
  assert text.count("while[") == 1, text


def test_early_exit_when_all_done(model):
  """With <end> forced, the loop must stop after one iteration, not run MAX steps."""
  params, features = model
  forced = jax.tree.map(lambda x: x, params)
  forced["logits"]["bias"] = forced["logits"]["bias"].at[END].set(1e4)
  calls = []
  real_step = decoder.step

  def counting_step(*args):
    jax.debug.callback(lambda: calls.append(1))
    return real_step(*args)

  decoder.step = counting_step
  try:
    tokens, _ = generate.generate(forced, features, jax.random.key(0), start_id=START,
                                  end_id=END, max_length=MAX, greedy=True)
    jax.block_until_ready(tokens)
  finally:
    decoder.step = real_step
  assert (np.asarray(tokens)[:, 0] == END).all()
  assert len(calls) == 1


def test_caption_images_jits_encoder_and_loop(model):
  params, _ = model
  w = jax.random.normal(jax.random.key(5), (3, D))

  def feature_fn(enc_params, images):  # a toy frozen encoder: (B, H, W, 3) -> (B, H*W, D)
    b, h, wd, c = images.shape
    return images.reshape(b, h * wd, c) @ enc_params

  images = jax.random.uniform(jax.random.key(6), (B, 2, 3, 3))
  tokens, _ = generate.caption_images(feature_fn, w, params, images, jax.random.key(0),
                                      start_id=START, end_id=END, max_length=MAX, greedy=True)
  direct, _ = generate.generate(params, feature_fn(w, images), jax.random.key(0),
                                start_id=START, end_id=END, max_length=MAX, greedy=True)
  np.testing.assert_array_equal(tokens, direct)
  jaxpr = str(jax.make_jaxpr(lambda i: generate.caption_images(
      feature_fn, w, params, i, jax.random.key(0), start_id=START, end_id=END,
      max_length=MAX))(images))
  assert "while[" in jaxpr and "dot_general" in jaxpr
