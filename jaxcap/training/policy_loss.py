"""The self-critical policy-gradient loss (Rennie et al. 2017): baselines, the loss of
sampled captions given their advantages, and that loss as a `training.LossFn`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxcap.model import decoders

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


def self_critical(spec: decoders.DecoderSpec, *, samples: int, temperature: float, start_id: int,
                  end_id: int, compute_dtype=jnp.float32):
  """The SCST loss as a `training.LossFn` of a batch {"features": (b, P, D), "tokens":
  (b * samples, L) sampled captions, image-major, "advantages": (b * samples,)}."""

  def loss_fn(params, batch, rng):
    del rng  # no dropout: the samples came from the deterministic decoder
    tokens = batch["tokens"]
    features = jnp.repeat(batch["features"], samples, axis=0).astype(compute_dtype)
    inputs = jnp.concatenate([jnp.full_like(tokens[:, :1], start_id), tokens[:, :-1]], axis=1)
    params = jax.tree.map(lambda p: p.astype(compute_dtype), params)
    outputs, _ = decoders.teacher_forced(params, spec, features, inputs)
    # The policy is what the sampler draws from (before its top-k cut).
    logits = decoders.project(params, outputs).astype(jnp.float32) / temperature
    total, count = policy_loss_terms(token_log_probs(logits, tokens),
                                     sample_mask(tokens, end_id), batch["advantages"])
    return total, {"count": count}

  return loss_fn
