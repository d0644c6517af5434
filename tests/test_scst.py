"""Self-critical sequence training: the CIDEr-D reward against pycocoevalcap, and the loss."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from pycocoevalcap.cider.cider_scorer import CiderScorer
from helpers import run, train_cmd  # train.py in a subprocess on tiny shapes

from jaxcap.data import text
from jaxcap.training import checkpoints, cider_reward, parallel, policy_loss, scst

WORDS = "a dog cat runs on the grass red ball big small near".split()


def _fixture(seed=0, num_images=12):
  """References with repeated n-grams, 1-7 captions per image, 0-40 words each."""
  rng = np.random.default_rng(seed)
  refs = []
  for _ in range(num_images):
    refs.append([" ".join(rng.choice(WORDS, rng.integers(1, 18)))
                 for _ in range(rng.integers(1, 8))])
  refs[0] = ["a dog a dog a dog a dog", "A dog.", "dog"]
  refs[1] = [" ".join(["the red ball"] * 13), "a red ball on the grass"]
  refs[2] = ["zebra runs", "a cat"]  # "zebra" is out of the vocabulary below
  return refs


def _vocab(refs):
  # Capped so that some reference words are out of the vocabulary.
  return text.Vocabulary.build([r for rs in refs for r in rs] + ["unseen"], max_size=12)


def _candidates(vocab, refs, samples, seed=1):
  """Token rows as the sampler writes them (`<end>`, then padding), some copied from
  references, some random, with repeats, `<start>`, `[UNK]` and no `<end>` at all."""
  rng = np.random.default_rng(seed)
  length = 44
  rows = []
  for i, rs in enumerate(refs):
    for s in range(samples):
      if s == 0:
        ids = [vocab.id(w) for w in text.normalize(rs[0]).split()]
      else:
        ids = list(rng.integers(1, len(vocab), rng.integers(0, 42)))
      rows.append((ids + [vocab.end_id] + [0] * length)[:length])
  rows = np.array(rows).reshape(len(refs), samples, length)
  rows[3, 1, :3] = [vocab.start_id, vocab.id("dog"), vocab.end_id]
  rows[4, 1, :] = vocab.id("dog")  # never ends
  rows[5, 1, :4] = [vocab.id("a"), vocab.id("dog"), vocab.id("a"), vocab.id("dog")]
  rows[5, 1, 4:] = [vocab.end_id] + [0] * (length - 5)
  rows[6, 1, 0] = vocab.end_id  # empty caption
  rows[7, 1, :2] = [text.UNK_ID, vocab.end_id]
  return rows


def _pycocoevalcap(refs, candidates):
  """pycocoevalcap's CiderScorer over the whole corpus, one candidate per image."""
  scorer = CiderScorer(n=4, sigma=6.0)
  for cand, rs in zip(candidates, refs):
    scorer += (cand, [text.normalize(r) for r in rs])
  return scorer.compute_score()[1]


def test_cider_d_equals_pycocoevalcap():
  refs = _fixture()
  vocab = _vocab(refs)
  samples = 3
  rows = _candidates(vocab, refs, samples)
  reward = cider_reward.CiderD.from_texts(refs, vocab)
  # Every image's samples in one batch, images shuffled and repeated.
  order = np.random.default_rng(2).permutation(len(refs))
  images = np.concatenate([np.repeat(order, samples), [0, 5]])
  batch = np.concatenate([rows[order].reshape(-1, rows.shape[-1]), rows[[0, 5], [0, 1]]])
  ours = reward.score_tokens(images, batch, end_id=vocab.end_id,
                             drop=(text.PAD_ID, vocab.start_id))
  expected = np.stack([_pycocoevalcap(refs, [vocab.to_text(r) for r in rows[:, s]])
                       for s in range(samples)], axis=1)  # (I, S)
  want = np.concatenate([expected[order].reshape(-1), expected[[0, 5], [0, 1]]])
  assert np.abs(want).max() > 1.0 and (want == 0).any()  # the fixture spans the range
  np.testing.assert_allclose(ours, want, rtol=0, atol=1e-9)


def test_cider_d_random_corpus_with_unseen_words():
  rng = np.random.default_rng(3)
  refs = [[list(rng.integers(0, 6, rng.integers(1, 30))) for _ in range(rng.integers(1, 6))]
          for _ in range(30)]
  cands = [list(rng.integers(0, 9, rng.integers(0, 35))) for _ in range(30)]  # 6-8: unseen
  cands[0] = [7, 8, 7, 8, 7]
  words, lengths = cider_reward._pad(cands)
  ours = cider_reward.CiderD(refs)(np.arange(30), words, lengths)
  join = lambda ws: " ".join(f"w{w}" for w in ws)
  scorer = CiderScorer(n=4, sigma=6.0)
  for c, rs in zip(cands, refs):
    scorer += (join(c), [join(r) for r in rs])
  np.testing.assert_allclose(ours, scorer.compute_score()[1], rtol=0, atol=1e-9)


def test_cider_d_rejects_empty_corpus():
  with pytest.raises(ValueError):
    cider_reward.CiderD([])
  with pytest.raises(ValueError):
    cider_reward.CiderD([[[1, 2]], []])


def test_baselines():
  rewards = np.array([[1.0, 2.0, 6.0], [0.0, 0.0, 3.0]])
  np.testing.assert_allclose(policy_loss.baseline(rewards, "mean"),
                             [[4.0, 3.5, 1.5], [1.5, 1.5, 0.0]])
  np.testing.assert_allclose(policy_loss.baseline(rewards, "greedy", np.array([2.0, 1.0])),
                             [[2.0] * 3, [1.0] * 3])
  with pytest.raises(ValueError):
    policy_loss.baseline(rewards, "greedy")
  with pytest.raises(ValueError):
    policy_loss.baseline(rewards[:, :1], "mean")
  with pytest.raises(ValueError):
    policy_loss.baseline(rewards, "median")


def test_sample_mask_stops_after_end():
  tokens = jnp.array([[5, 3, 2, 0, 0], [5, 5, 5, 5, 5], [2, 0, 0, 0, 0]])
  np.testing.assert_array_equal(policy_loss.sample_mask(tokens, end_id=2),
                                [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])


# A toy policy: independent logits per (image, position). Enough to check the loss's sign and
# that following it raises the reward.
def _policy_loss(params, tokens, rewards, base, end_id):
  """params (I, T, V); tokens (I, S, T)."""
  logits = jnp.broadcast_to(params[:, None], tokens.shape + params.shape[-1:])
  log_p = policy_loss.token_log_probs(logits, tokens)
  return policy_loss.scst_loss(log_p, policy_loss.sample_mask(tokens, end_id), rewards, base)


@pytest.mark.slow
def test_gradient_is_zero_when_every_sample_scores_the_baseline():
  key = jax.random.key(0)
  params = jax.random.normal(key, (2, 5, 7))
  tokens = jax.random.randint(jax.random.fold_in(key, 1), (2, 3, 5), 0, 7)
  rewards = jnp.array([[0.5, 0.5, 0.5], [2.0, 2.0, 2.0]])
  for base in (policy_loss.baseline(np.asarray(rewards), "mean"),
               policy_loss.baseline(np.asarray(rewards), "greedy", np.array([0.5, 2.0]))):
    grads = jax.grad(_policy_loss)(params, tokens, rewards, jnp.asarray(base), 6)
    np.testing.assert_array_equal(grads, 0.0)
  # ... and not zero otherwise: the check above can fail.
  grads = jax.grad(_policy_loss)(params, tokens, rewards, jnp.zeros_like(rewards), 6)
  assert float(jnp.abs(grads).max()) > 1e-3


@pytest.mark.slow
def test_scst_raises_the_reward_on_a_tiny_problem():
  refs = [["a dog runs on the grass"], ["a red ball near a cat"], ["the small cat runs"]]
  vocab = text.Vocabulary.build([r for rs in refs for r in rs], 20)
  reward = cider_reward.CiderD.from_texts(refs, vocab)
  images, length, samples = len(refs), 7, 8
  params = jnp.zeros((images, length, len(vocab)))
  optimizer = optax.adam(0.3)
  opt_state = optimizer.init(params)
  grad_fn = jax.jit(jax.grad(_policy_loss), static_argnums=4)
  key = jax.random.key(0)
  image_ids = np.repeat(np.arange(images), samples)

  def sample(params, key):
    logits = jnp.broadcast_to(params[:, None], (images, samples, length, len(vocab)))
    tokens = np.asarray(jax.random.categorical(key, logits))
    r = reward.score_tokens(image_ids, tokens.reshape(images * samples, length),
                            end_id=vocab.end_id)
    return tokens, r.reshape(images, samples)

  _, before = sample(params, jax.random.fold_in(key, 10_000))
  for step in range(60):
    tokens, r = sample(params, jax.random.fold_in(key, step))
    grads = grad_fn(params, jnp.asarray(tokens), jnp.asarray(r),
                    jnp.asarray(policy_loss.baseline(r, "mean")), vocab.end_id)
    updates, opt_state = optimizer.update(grads, opt_state)
    params = optax.apply_updates(params, updates)
  _, after = sample(params, jax.random.fold_in(key, 10_001))
  assert after.mean() > before.mean() + 2.0, (before.mean(), after.mean())


# "gru" runs end to end in the next test.
@pytest.mark.slow
@pytest.mark.parametrize("kind,baseline", [("gru_mha", "mean"), ("transformer", "greedy")])
def test_phase_step_for_other_decoders(kind, baseline):
  from configs import quickstart  # pylint: disable=g-import-not-at-top
  from jaxcap import training
  from jaxcap.data import pipeline  # pylint: disable=g-import-not-at-top
  from jaxcap.model import decoders  # pylint: disable=g-import-not-at-top
  config = quickstart.get_config()
  config.model.max_length, config.train.batch_size, config.train.num_steps = 8, 4, 3
  config.train.scst_steps, config.train.scst_samples, config.train.scst_batch_size = 2, 3, 4
  config.train.scst_baseline, config.train.scst_learning_rate = baseline, 1e-2
  captions = [["a red circle"], ["a blue square left of a red circle"], ["a green triangle"],
              ["a red square above a blue circle"]] * 2
  vocab = text.Vocabulary.build([c[0] for c in captions], 30)
  features = np.random.default_rng(0).normal(size=(8, 4, 6)).astype(np.float16)
  data = pipeline.make_caption_set(features, captions, vocab, 8, all_captions=False)
  options = {"gru_mha": dict(num_heads=2),
             "transformer": dict(num_heads=2, num_layers=1, dropout=0.1)}[kind]
  spec = decoders.DecoderSpec(kind, len(vocab), 8, 6, positions=4, max_length=8, **options)
  optimizer = training.keras_adam(training.learning_rate_schedule(1e-3, "cosine", 3))
  phase = scst.Phase(config, data, vocab, spec, jax.random.key(1))
  state = training.init_train_state(decoders.init(jax.random.key(0), spec), optimizer)
  before = jax.tree.map(np.asarray, state)

  def run(state):
    for step in (3, 4):  # the first SCST step (fresh Adam) and the next
      state, metrics = phase.step(state, step)
      assert np.isfinite(float(metrics["loss"]))
    return jax.tree.map(np.asarray, state)

  first = run(state)
  scalars = phase.pop_scalars()
  assert set(scalars) == {"scst_reward", "scst_baseline"} and phase.pop_scalars() == {}
  assert int(first.step) == int(before.step) + 2
  # Parameters moved, and a rerun from the same state takes exactly the same steps.
  assert any(np.abs(a - b).max() > 0 for a, b in zip(jax.tree.leaves(first.params),
                                                      jax.tree.leaves(before.params)))
  again = run(parallel.put_replicated(before, phase.mesh))
  for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(again)):
    np.testing.assert_array_equal(a, b)
  # The state keeps the cross-entropy optimizer's structure (checkpoints restore into it).
  assert jax.tree.structure(first) == jax.tree.structure(before)


@pytest.mark.slow
def test_training_continues_with_scst_and_resumes(tmp_path):
  cmd = lambda *extra: train_cmd(tmp_path, "--config.train.num_steps=4",
                                            "--config.train.scst_batch_size=8", *extra)
  result = run(cmd())
  assert result.returncode == 0, result.stderr[-3000:]
  # Raising scst_steps on a finished cross-entropy run continues it.
  result = run(cmd("--config.train.scst_steps=2"))
  assert result.returncode == 0, result.stderr[-3000:]
  assert "resumed from step 4" in result.stdout
  result = run(cmd("--config.train.scst_steps=4", "--config.train.scst_baseline=mean"))
  assert result.returncode == 0, result.stderr[-3000:]
  assert "resumed from step 6" in result.stdout
  lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [l["step"] for l in lines] == [2, 4, 6, 8]
  assert "scst_reward" not in lines[1]
  assert all(0 <= l["scst_reward"] <= 10 and "scst_baseline" in l for l in lines[2:])
  assert "val_cider" in lines[-1]
  assert checkpoints.Checkpoints(tmp_path, read_only=True).latest_step() == 8
