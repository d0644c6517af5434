"""Self-critical sequence training (Rennie et al. 2017): the phase that follows cross-entropy.

Each step samples captions on the devices, scores them on the host against the training
references (`cider_reward.CiderD`), and updates the policy with the one train step
(`training.make_step`) and the self-critical loss (`policy_loss.self_critical`).
"""

from __future__ import annotations

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from jaxcap import decoding, training
from jaxcap.data import pipeline, text
from jaxcap.model import decoders
from jaxcap.training import cider_reward, parallel, policy_loss


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
  key = jax.random.fold_in(key, jax.lax.axis_index(parallel.AXIS))
  ids = dict(start_id=start_id, end_id=end_id, max_length=max_length)
  sampling = decoding.DecodeOptions("sample", top_k=settings.top_k,
                                    temperature=settings.temperature)
  tokens, _, _ = decoding.decode(params, spec, jnp.repeat(features, settings.samples, axis=0),
                                 key, sampling, **ids)
  greedy = None
  if settings.baseline == "greedy":
    greedy, _, _ = decoding.decode(params, spec, features, key, decoding.DecodeOptions(), **ids)
  return tokens, greedy


class Phase:
  """The SCST steps that follow cross-entropy training (`train.scst_steps` of them).

  `step(state, step)` takes the replicated TrainState and the global step number and returns
  (new state, metrics) like the cross-entropy step; `pop_scalars()` gives the
  mean sample and baseline rewards since the last call. Batches and sampling keys are pure
  functions of (seed, step), so a resumed run takes the same steps.
  """

  def __init__(self, config, train_set, vocab: text.Vocabulary, spec: decoders.DecoderSpec, rng,
               *, compute_dtype=jnp.float32, mesh=None):
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
                                    config.train.eps, config.train.get("weight_decay", 0.0))
    self.mesh = mesh or parallel.data_mesh()
    self._init_opt = jax.jit(optimizer.init, out_shardings=parallel.replicated(self.mesh))
    self.data = train_set
    self.end_id, self.start_id = vocab.end_id, vocab.start_id
    # One row per image: its first example, and all its references (of every shard: the
    # CIDEr-D document frequencies are the whole training set's).
    _, first = np.unique(train_set.image_index, return_index=True)
    self.rows = first
    # Each shard's images, a range of `first`; a step samples the same number from each.
    shards = len(train_set.shards)
    if self.batch_size % shards:
      raise ValueError(f"train.scst_batch_size ({self.batch_size}) must be a multiple of the "
                       f"number of data shards ({shards})")
    self.image_starts = [int(np.searchsorted(first, start)) for start, _ in train_set.shards]
    ends = self.image_starts[1:] + [len(first)]
    self.index = [pipeline.index_batches(
        end - start, self.batch_size // shards, self.seed, k, "training images",
        "train.scst_batch_size") for k, (start, end) in enumerate(zip(self.image_starts, ends))]
    self.reward = cider_reward.CiderD.from_texts([train_set.references[r] for r in first], vocab)
    self.rng = jax.random.fold_in(rng, 0x5C57)
    ids = dict(start_id=vocab.start_id, end_id=vocab.end_id)
    self._sample = jax.jit(jax.shard_map(functools.partial(
        _sample, spec=spec, settings=self.settings, max_length=config.model.max_length, **ids),
        mesh=self.mesh, in_specs=(P(), P(parallel.AXIS), P()), out_specs=P(parallel.AXIS),
        check_vma=False))
    self._update = training.make_step(policy_loss.self_critical(
        spec, samples=self.settings.samples, temperature=self.settings.temperature,
        compute_dtype=compute_dtype, **ids), optimizer, self.mesh)
    self._rewards, self._baselines = [], []
    self.reward_seconds = 0.0  # host time spent on rewards, for the logs

  def step(self, state, step: int):
    if step == self.first_step:
      state = state.replace(opt_state=self._init_opt(state.params))
    # This process's images (indices into self.rows): its shards' parts of the global batch.
    images = np.concatenate([self.image_starts[k] + self.index[k][step]
                             for k in self.data.local])
    features = parallel.global_batch(self.data.features_of(self.rows[images]), self.mesh)
    sampled, greedy = self._sample(state.params, features, jax.random.fold_in(self.rng, step))
    tokens = parallel.process_rows(sampled)  # this process's images' samples; waits
    start = time.perf_counter()
    samples = self.settings.samples
    drop = (text.PAD_ID, self.start_id)
    rewards = self.reward.score_tokens(np.repeat(images, samples), tokens, end_id=self.end_id,
                                       drop=drop).reshape(-1, samples)
    greedy_rewards = None
    if greedy is not None:
      greedy_rewards = self.reward.score_tokens(images, parallel.process_rows(greedy),
                                                end_id=self.end_id, drop=drop)
    base = policy_loss.baseline(rewards, self.settings.baseline, greedy_rewards)
    self.reward_seconds += time.perf_counter() - start
    self._rewards.append(rewards.mean())
    self._baselines.append(base.mean())
    advantages = (rewards - base).astype(np.float32).reshape(-1)
    return self._update(state, {"features": features, "tokens": sampled,
                                "advantages": parallel.global_batch(advantages, self.mesh)})

  def pop_scalars(self) -> dict:
    """{"scst_reward": mean sample CIDEr-D, "scst_baseline": mean baseline} since the last
    call (empty if no SCST step ran)."""
    if not self._rewards:
      return {}
    out = {"scst_reward": float(np.mean(self._rewards)),
           "scst_baseline": float(np.mean(self._baselines))}
    self._rewards, self._baselines = [], []
    return out
