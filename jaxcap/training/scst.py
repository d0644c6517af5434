"""Self-critical sequence training (Rennie et al. 2017): the CIDEr-D reward and the loss.

The reward is pycocoevalcap's CIDEr-D (`pycocoevalcap.cider.CiderScorer`: n = 1..4, clipped
tf-idf cosine, Gaussian length penalty with sigma 6, x10) with its document frequencies taken
once from a fixed corpus, the training references, as SCST implementations do. Words are the
model's own tokens (`text.normalize`), so a sampled caption is scored on the words it chose.

Everything is numpy on integer arrays: an n-gram of order k gets an id from (id of its first
k-1 words, last word), so n-grams are matched by `searchsorted` on sorted int64 keys and a
batch of candidates is scored without a Python loop over captions or n-grams.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxcap import decoding, training
from jaxcap.data import pipeline, text
from jaxcap.model import decoders

ORDER = 4  # n-grams of 1..4 words, as the COCO evaluation
SIGMA = 6.0  # the length penalty's standard deviation


def _ngram_ids(words: np.ndarray, lengths: np.ndarray, word_base: int, tables=None):
  """Per-order n-gram ids of padded word rows.

  Args:
    words: (N, L) int64 word ids (anything past a row's length is ignored).
    lengths: (N,) words per row.
    word_base: larger than every word id.
    tables: None to number the n-grams found here (returned), or a list of per-order sorted
      key arrays to look them up in (-1: not in the table).

  Returns:
    (ids (ORDER, N, L) int64, -1 where no n-gram of that order starts; the tables).
  """
  n, length = words.shape
  ids = np.full((ORDER, n, length), -1, np.int64)
  new_tables = []
  prefix = None
  for k in range(ORDER):
    m = max(length - k, 0)  # positions where an n-gram of k + 1 words can start
    valid = np.arange(m)[None, :] + k + 1 <= lengths[:, None]  # (N, m)
    last = words[:, k:k + m]
    if k == 0:
      keys = last
    else:
      # An n-gram whose first k words are unseen is unseen (prefix -1).
      valid &= prefix[:, :m] >= 0
      keys = prefix[:, :m] * word_base + last
    if tables is not None:
      # A word beyond the table's ids would alias another key: such n-grams are unseen.
      valid &= last < word_base
    found = keys[valid]
    if tables is None:
      table, index = np.unique(found, return_inverse=True)
      new_tables.append(table)
    else:
      table = tables[k]
      index = np.searchsorted(table, found)
      hit = index < len(table)
      hit[hit] = table[index[hit]] == found[hit]
      index = np.where(hit, index, -1)
    out = np.full((n, m), -1, np.int64)
    out[valid] = index
    ids[k, :, :m] = out
    prefix = out
  return ids, (new_tables if tables is None else tables)


def _pad(rows: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
  lengths = np.array([len(r) for r in rows], np.int64)
  out = np.zeros((len(rows), max(1, int(lengths.max(initial=0)))), np.int64)
  for i, r in enumerate(rows):
    out[i, :len(r)] = r
  return out, lengths


class CiderD:
  """CIDEr-D of candidates against the references of a fixed corpus of images.

  Equal to pycocoevalcap's `CiderScorer` run over the whole corpus (one candidate per image,
  document frequencies from every image's references, log(corpus size) as the idf base), for
  any candidate of any corpus image, several per image included.
  """

  def __init__(self, references: Sequence[Sequence[Sequence[int]]], sigma: float = SIGMA):
    """references[i]: image i's reference captions, each a sequence of non-negative word ids."""
    if not len(references) or any(not len(refs) for refs in references):
      raise ValueError("CiderD needs at least one image and one reference per image")
    self.sigma = sigma
    self.num_images = len(references)
    self.max_refs = max(len(refs) for refs in references)
    self.num_refs = np.array([len(refs) for refs in references], np.int64)
    ref_image = np.repeat(np.arange(self.num_images), self.num_refs)
    ref_slot = np.concatenate([np.arange(n) for n in self.num_refs])
    words, lengths = _pad([r for refs in references for r in refs])
    if words.min(initial=0) < 0:
      raise ValueError("word ids must be non-negative")
    self.word_base = int(words.max(initial=0)) + 1
    ids, self.tables = _ngram_ids(words, lengths, self.word_base)
    self.offsets = np.cumsum([0] + [len(t) for t in self.tables])  # order k: ids from offsets[k]
    num_ngrams = int(self.offsets[-1])
    self.num_ngrams = num_ngrams

    # Every n-gram occurrence as (reference, global n-gram id).
    ref_of = np.broadcast_to(np.arange(len(words))[None, :, None], ids.shape)
    valid = ids >= 0
    gid = (ids + self.offsets[:-1, None, None])[valid]
    occurrence_ref = ref_of[valid]
    # Term frequencies per (reference, n-gram).
    ref_ngram, tf = np.unique(occurrence_ref * num_ngrams + gid, return_counts=True)
    ref, g = ref_ngram // num_ngrams, ref_ngram % num_ngrams
    # Per (image, n-gram) a row of counts by reference slot: what a candidate n-gram is
    # matched against. One entry per n-gram of an image's references: the document frequency
    # is how many images' entries an n-gram has.
    self.entry_keys, entry = np.unique(ref_image[ref] * num_ngrams + g, return_inverse=True)
    df = np.bincount(self.entry_keys % num_ngrams, minlength=num_ngrams)
    self.log_corpus = np.log(float(self.num_images))
    self.weight = self.log_corpus - np.log(np.maximum(1.0, df))  # idf per n-gram
    self.entry_counts = np.zeros((len(self.entry_keys), self.max_refs),
                                 np.uint8 if tf.max() < 256 else np.int32)
    self.entry_counts[entry, ref_slot[ref]] = tf

    order = np.searchsorted(self.offsets, g, side="right") - 1
    sq = (tf * self.weight[g]) ** 2
    norms = np.sqrt(np.bincount(ref * ORDER + order, weights=sq, minlength=len(words) * ORDER))
    self.ref_norm = np.zeros((self.num_images, self.max_refs, ORDER))
    self.ref_norm[ref_image, ref_slot] = norms.reshape(len(words), ORDER)
    # pycocoevalcap's length is the number of bigrams (it counts terms where n == 1).
    self.ref_length = np.zeros((self.num_images, self.max_refs))
    self.ref_length[ref_image, ref_slot] = np.maximum(lengths - 1, 0)

  @classmethod
  def from_texts(cls, references: Sequence[Sequence[str]], vocab: text.Vocabulary, **kwargs):
    """From caption texts: words as the model writes them (`text.normalize`), vocabulary ids,
    and a distinct id beyond the vocabulary for each out-of-vocabulary word (so `[UNK]` in a
    sample matches nothing)."""
    ids = {t: i for i, t in enumerate(vocab.tokens)}
    rows = []
    for refs in references:
      rows.append([[ids.setdefault(w, len(ids)) for w in text.normalize(r).split()]
                   for r in refs])
    return cls(rows, **kwargs)

  def __call__(self, images: np.ndarray, words: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """CIDEr-D (C,) float64 of candidates `words` (C, L) int (first `lengths` (C,) are the
    caption) for corpus images `images` (C,)."""
    images = np.asarray(images, np.int64)
    words = np.asarray(words, np.int64)
    lengths = np.asarray(lengths, np.int64)
    num = len(images)
    if not num:
      return np.zeros((0,))
    # The candidates' own distinct n-grams (unseen ones included, for their norms), numbered
    # within this batch; and their ids in the corpus, looked up (-1: unseen).
    local, _ = _ngram_ids(words, lengths, max(self.word_base, int(words.max(initial=0)) + 1))
    corpus, _ = _ngram_ids(words, lengths, self.word_base, self.tables)
    valid = local >= 0
    order = np.broadcast_to(np.arange(ORDER)[:, None, None], local.shape)[valid]
    cand = np.broadcast_to(np.arange(num)[None, :, None], local.shape)[valid]
    local_id = local[valid]
    g = np.where(corpus[valid] >= 0, corpus[valid] + self.offsets[order], -1)
    span = int(local_id.max(initial=0)) + 1
    key = (cand * ORDER + order) * span + local_id
    key, first, tf = np.unique(key, return_index=True, return_counts=True)
    cand, order, g = cand[first], order[first], g[first]
    # Unseen n-grams have document frequency 0, so idf log(corpus) - log(max(1, 0)).
    vec = tf * np.where(g >= 0, self.weight[np.maximum(g, 0)], self.log_corpus)
    norm = np.sqrt(np.bincount(cand * ORDER + order, weights=vec ** 2,
                               minlength=num * ORDER)).reshape(num, ORDER)

    # Matches: each known candidate n-gram against the counts of its image's references.
    known = g >= 0
    query = images[cand[known]] * self.num_ngrams + g[known]
    pos = np.minimum(np.searchsorted(self.entry_keys, query), len(self.entry_keys) - 1)
    hit = self.entry_keys[pos] == query
    ref_vec = self.entry_counts[pos[hit]] * self.weight[g[known][hit]][:, None]  # (M, R)
    contrib = np.minimum(vec[known][hit][:, None], ref_vec) * ref_vec
    index = cand[known][hit] * ORDER + order[known][hit]
    val = np.zeros((num * ORDER, self.max_refs))
    np.add.at(val, index, contrib)
    val = val.reshape(num, ORDER, self.max_refs)
    ref_norm = self.ref_norm[images].transpose(0, 2, 1)  # (C, ORDER, R)
    denom = norm[:, :, None] * ref_norm
    val = np.where(denom != 0, val / np.where(denom != 0, denom, 1.0), val)
    delta = np.maximum(lengths - 1, 0)[:, None] - self.ref_length[images]  # (C, R)
    penalty = np.exp(-(delta ** 2) / (2 * self.sigma ** 2))
    per_ref = val.mean(axis=1) * penalty  # (C, R)
    used = np.arange(self.max_refs)[None, :] < self.num_refs[images][:, None]
    return 10.0 * np.where(used, per_ref, 0.0).sum(axis=1) / self.num_refs[images]

  def score_tokens(self, images: np.ndarray, tokens: np.ndarray, *, end_id: int,
                   drop: Sequence[int] = (text.PAD_ID,)) -> np.ndarray:
    """CIDEr-D (C,) of generated ids `tokens` (C, L): words up to the first `end_id`, without
    the ids in `drop` (padding, `<start>`: what `Vocabulary.decode` leaves out)."""
    tokens = np.asarray(tokens, np.int64)
    length = tokens.shape[1]
    before_end = np.cumsum(tokens == end_id, axis=1) == 0
    keep = before_end & ~np.isin(tokens, np.asarray(drop))
    # Move the kept words to the front of each row, in order.
    order = np.argsort(~keep, axis=1, kind="stable")
    words = np.take_along_axis(tokens, order, axis=1)
    lengths = keep.sum(axis=1)
    words = np.where(np.arange(length)[None, :] < lengths[:, None], words, 0)
    return self(images, words, lengths)


# --------------------------------------------------------------------------------------------
# The policy-gradient loss


def baseline(rewards: np.ndarray, kind: str, greedy_rewards: np.ndarray | None = None
             ) -> np.ndarray:
  """The baseline (B, S) of sample rewards (B, S): "greedy", the reward of the image's greedy
  caption `greedy_rewards` (B,) (Rennie et al. 2017), or "mean", the mean reward of the image's
  other samples (Luo 2020; needs S > 1)."""
  rewards = np.asarray(rewards, np.float64)
  if kind == "greedy":
    if greedy_rewards is None:
      raise ValueError("the greedy baseline needs the greedy captions' rewards")
    return np.broadcast_to(np.asarray(greedy_rewards, np.float64)[:, None], rewards.shape)
  if kind == "mean":
    samples = rewards.shape[1]
    if samples < 2:
      raise ValueError("the mean baseline needs at least 2 samples per image")
    return (rewards.sum(axis=1, keepdims=True) - rewards) / (samples - 1)
  raise ValueError(f"unknown SCST baseline {kind!r}: use greedy or mean")


def sample_mask(tokens: jax.Array, end_id: int) -> jax.Array:
  """(N, T) float: 1 on a sampled caption's tokens up to and including its first `<end>`."""
  is_end = tokens == end_id
  return ((jnp.cumsum(is_end, axis=-1) - is_end) == 0).astype(jnp.float32)


def token_log_probs(logits: jax.Array, tokens: jax.Array) -> jax.Array:
  """log p(tokens) (N, T) under logits (N, T, V) (float32)."""
  log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return jnp.take_along_axis(log_p, tokens[..., None], axis=-1)[..., 0]


def policy_loss_terms(log_probs: jax.Array, mask: jax.Array, advantages: jax.Array
                      ) -> tuple[jax.Array, jax.Array]:
  """(sum of -advantage * log p over the masked tokens, their count).

  Args:
    log_probs: (N, T) log-probabilities of the sampled tokens.
    mask: (N, T) 1 on the tokens of each sample (`sample_mask`).
    advantages: (N,) reward minus baseline; a constant (no gradient flows into it).
  """
  advantages = jax.lax.stop_gradient(advantages.astype(jnp.float32))
  return -jnp.sum(advantages[:, None] * log_probs * mask), jnp.sum(mask)


def scst_loss(log_probs: jax.Array, mask: jax.Array, rewards: jax.Array,
              baseline_rewards: jax.Array) -> jax.Array:
  """The self-critical loss: -(reward - baseline) * log p(token), averaged over sampled tokens.

  Args:
    log_probs: (B, S, T) log-probabilities of S sampled captions per image.
    mask: (B, S, T) their `<end>` masks.
    rewards, baseline_rewards: (B, S).
  """
  total, count = policy_loss_terms(
      log_probs.reshape(-1, log_probs.shape[-1]), mask.reshape(-1, mask.shape[-1]),
      (jnp.asarray(rewards) - jnp.asarray(baseline_rewards)).reshape(-1))
  return total / jnp.maximum(count, 1.0)


# --------------------------------------------------------------------------------------------
# Training: sample, reward on the host, one pmap-ped policy-gradient update


@dataclasses.dataclass(frozen=True)
class Settings:
  """The `train.scst_*` options (see configs/quickstart.py)."""
  steps: int = 0
  batch_size: int = 0  # images a step; 0: train.batch_size
  samples: int = 5
  baseline: str = "greedy"
  learning_rate: float = 5e-5
  temperature: float = 1.0
  top_k: int = 0

  @classmethod
  def from_config(cls, train: ml_collections.ConfigDict) -> "Settings":
    """From `train.scst_*` (absent: the defaults above); `config_checks` checks the values."""
    return cls(**{f.name: train.get(f"scst_{f.name}", f.default)
                  for f in dataclasses.fields(cls)})


def _sample(params, features, key, *, spec, settings: Settings, start_id, end_id, max_length):
  """Per device: S samples per image (b*S, L), image-major, and the greedy captions (b, L)."""
  ids = dict(start_id=start_id, end_id=end_id, max_length=max_length)
  sampling = decoding.DecodeOptions("sample", top_k=settings.top_k,
                                    temperature=settings.temperature)
  tokens, _, _ = decoding.decode(params, spec, jnp.repeat(features, settings.samples, axis=0),
                                 key, sampling, **ids)
  greedy = None
  if settings.baseline == "greedy":
    greedy, _, _ = decoding.decode(params, spec, features, key, decoding.DecodeOptions(), **ids)
  return tokens, greedy


def _update(state, features, tokens, advantages, *, optimizer, spec, compute_dtype, settings,
            start_id, end_id):
  """Per device: features (b, P, D), sampled tokens (b*S, L), advantages (b*S,)."""
  repeated = jnp.repeat(features, settings.samples, axis=0).astype(compute_dtype)
  inputs = jnp.concatenate([jnp.full_like(tokens[:, :1], start_id), tokens[:, :-1]], axis=1)
  mask = sample_mask(tokens, end_id)
  count = jnp.maximum(jax.lax.psum(jnp.sum(mask), training.AXIS), 1.0)

  def local_loss(params):
    params = jax.tree.map(lambda p: p.astype(compute_dtype), params)
    # No dropout: the samples came from the deterministic decoder.
    outputs, _ = decoders.teacher_forced(params, spec, repeated, inputs)
    logits = decoders.project(params, outputs)
    # The policy is what the sampler draws from (before its top-k cut).
    log_probs = token_log_probs(logits.astype(jnp.float32) / settings.temperature, tokens)
    total, _ = policy_loss_terms(log_probs, mask, advantages)
    return total / count  # this device's share of the global token mean

  local, grads = jax.value_and_grad(local_loss)(state.params)
  grads = jax.lax.psum(grads, training.AXIS)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  new_state = training.TrainState(
      step=state.step + 1, params=optax.apply_updates(state.params, updates),
      opt_state=opt_state)
  return new_state, jax.lax.psum(local, training.AXIS)


class Phase:
  """The SCST steps that follow cross-entropy training (`train.scst_steps` of them).

  `step(state, step)` takes the replicated TrainState and the global step number and returns
  (new state, replicated loss (n,)) like the cross-entropy step; `pop_scalars()` gives the
  mean sample and baseline rewards since the last call. Batches and sampling keys are pure
  functions of (seed, step), so a resumed run takes the same steps.
  """

  def __init__(self, config, train_set, vocab: text.Vocabulary, spec: decoders.DecoderSpec, rng,
               *, compute_dtype=jnp.float32, host_share=lambda x: x):
    self.settings = Settings.from_config(config.train)
    self.batch_size = self.settings.batch_size or config.train.batch_size
    self.seed, self.first_step = config.seed, config.train.num_steps
    # Its own Adam, started afresh at the first SCST step: the cross-entropy moments are of
    # another loss's gradients (and its learning rate may have decayed to 0). Its state must
    # have the cross-entropy optimizer's structure (checkpoints restore into that), and optax
    # keeps a state for a scheduled learning rate: hence a constant schedule when that is one.
    learning_rate = self.settings.learning_rate
    if config.train.lr_schedule != "constant":
      learning_rate = optax.constant_schedule(learning_rate)
    optimizer = training.keras_adam(learning_rate, config.train.b1, config.train.b2,
                                    config.train.eps)
    self._init_opt = jax.pmap(optimizer.init)
    self.data, self.host_share = train_set, host_share
    self.end_id, self.start_id = vocab.end_id, vocab.start_id
    # One row per image: its first example, and all its references.
    _, first = np.unique(train_set.image_index, return_index=True)
    self.rows = first
    self.reward = CiderD.from_texts([train_set.references[r] for r in first], vocab)
    self.rng = jax.random.fold_in(rng, 0x5C57)
    ids = dict(start_id=vocab.start_id, end_id=vocab.end_id)
    self._sample = jax.pmap(functools.partial(
        _sample, spec=spec, settings=self.settings, max_length=config.model.max_length, **ids),
        axis_name=training.AXIS)
    self._update = jax.pmap(functools.partial(
        _update, optimizer=optimizer, spec=spec, compute_dtype=compute_dtype,
        settings=self.settings, **ids), axis_name=training.AXIS, donate_argnums=(0,))
    self._rewards, self._baselines = [], []
    self.reward_seconds = 0.0  # host time spent on rewards, for the logs

  def step(self, state, step: int):
    if step == self.first_step:
      state = state.replace(opt_state=self._init_opt(state.params))
    images = self.host_share(pipeline.batch_rows(
        len(self.rows), self.batch_size, self.seed, step, "training images",
        "train.scst_batch_size"))
    features = training.shard(self.data.features_of(self.rows[images]))
    devices = features.shape[0]
    keys = jax.random.split(jax.random.fold_in(self.rng, step), devices)
    tokens, greedy = self._sample(state.params, features, keys)
    tokens = np.asarray(tokens)  # waits for the sampler
    start = time.perf_counter()
    samples = self.settings.samples
    drop = (text.PAD_ID, self.start_id)
    rewards = self.reward.score_tokens(np.repeat(images, samples),
                                       tokens.reshape(-1, tokens.shape[-1]),
                                       end_id=self.end_id, drop=drop).reshape(-1, samples)
    greedy_rewards = None
    if greedy is not None:
      greedy = np.asarray(greedy)
      greedy_rewards = self.reward.score_tokens(images, greedy.reshape(-1, greedy.shape[-1]),
                                                end_id=self.end_id, drop=drop)
    base = baseline(rewards, self.settings.baseline, greedy_rewards)
    self.reward_seconds += time.perf_counter() - start
    self._rewards.append(rewards.mean())
    self._baselines.append(base.mean())
    advantages = (rewards - base).astype(np.float32).reshape(devices, -1)
    return self._update(state, features, tokens, advantages)

  def pop_scalars(self) -> dict:
    """{"scst_reward": mean sample CIDEr-D, "scst_baseline": mean baseline} since the last
    call (empty if no SCST step ran)."""
    if not self._rewards:
      return {}
    out = {"scst_reward": float(np.mean(self._rewards)),
           "scst_baseline": float(np.mean(self._baselines))}
    self._rewards, self._baselines = [], []
    return out
