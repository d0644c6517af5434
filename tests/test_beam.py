import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcap import beam, decoder, generate

V, U, P, D, B, MAX = 19, 16, 6, 10, 8, 10
START, END = 2, 3


@pytest.fixture(scope="module")
def model():
  params = decoder.init(jax.random.key(1), vocab_size=V, units=U, feature_dim=D)
  params["logits"]["bias"] = params["logits"]["bias"].at[END].set(1.0)
  # Sharper distributions make greedy and beam disagree more often.
  params["logits"]["kernel"] = params["logits"]["kernel"] * 4
  features = jax.random.normal(jax.random.key(2), (B, P, D))
  return params, features


def sequence_log_prob(params, features, tokens):
  """Teacher-forced sum of log-probabilities of each (B, L) caption up to its <end>."""
  inputs = jnp.concatenate([jnp.full((tokens.shape[0], 1), START), tokens[:, :-1]], axis=1)
  logits, _ = decoder.teacher_forced_logits(params, features, inputs)
  logp = jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[..., None], axis=-1)[..., 0]
  ended_before = jnp.cumsum(tokens == END, axis=1) - (tokens == END)
  return jnp.sum(jnp.where(ended_before == 0, logp, 0.0), axis=1)


def run_beam(params, features, k, alpha=0.0):
  fn = jax.jit(lambda p, f: beam.beam_search(p, f, start_id=START, end_id=END, max_length=MAX,
                                             beam_size=k, alpha=alpha))
  return fn(params, features)


def run_greedy(params, features):
  tokens, _ = generate.generate(params, features, jax.random.key(0), start_id=START,
                                end_id=END, max_length=MAX, greedy=True)
  return tokens


def test_beam_one_equals_greedy(model):
  params, features = model
  tokens, _, _ = run_beam(params, features, 1)
  np.testing.assert_array_equal(tokens[:, 0], run_greedy(params, features))


@pytest.mark.parametrize("k", [2, 3, 5])
def test_beam_never_worse_than_greedy(model, k):
  params, features = model
  tokens, scores, log_probs = run_beam(params, features, k)
  greedy_lp = sequence_log_prob(params, features, run_greedy(params, features))
  best_lp = sequence_log_prob(params, features, tokens[:, 0])
  np.testing.assert_allclose(best_lp, log_probs[:, 0], atol=1e-4)  # reported = recomputed
  assert (np.asarray(best_lp) >= np.asarray(greedy_lp) - 1e-5).all()
  assert (np.diff(np.asarray(scores), axis=1) <= 1e-6).all()  # best first
  assert (np.asarray(best_lp) > np.asarray(greedy_lp) + 1e-4).any()  # beam found better ones


def test_finished_captions_pad_after_end(model):
  params, features = model
  tokens, _, _ = run_beam(params, features, 3)
  for row in np.asarray(tokens).reshape(-1, MAX):
    ends = np.flatnonzero(row == END)
    if len(ends):
      assert (row[ends[0] + 1:] == 0).all()


def test_length_penalty_prefers_longer(model):
  params, features = model
  plain, _, _ = run_beam(params, features, 3, alpha=0.0)
  long, _, _ = run_beam(params, features, 3, alpha=2.0)
  length = lambda t: (np.asarray(t)[:, 0] != 0).sum(-1)
  assert length(long).mean() >= length(plain).mean()


def test_one_while_loop_in_jaxpr(model):
  params, features = model
  jaxpr = str(jax.make_jaxpr(lambda p, f: beam.beam_search(
      p, f, start_id=START, end_id=END, max_length=MAX, beam_size=3))(params, features))
  assert jaxpr.count("while[") == 1
