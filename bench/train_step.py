"""Decoder train steps per second at the seed's sizes: jaxcap vs the seed's Keras model.

Also: jaxcap's achieved FLOP/s against a dense matmul measured in the same run (the vocabulary
projection's shape, which dominates the step), and the padding comparison: captions padded
to 64 tokens as the seed does vs trimmed to the batch's bucket on a COCO-like length mix.

    python bench/train_step.py [--quick]
"""

from __future__ import annotations


import common  # sets sys.path and the Keras backend
from common import row, timeit

import jax
import jax.numpy as jnp
import numpy as np

from jaxcap import seed_keras, training
from jaxcap.data import pipeline

VOCAB, UNITS, POSITIONS, FEATURE_DIM, BATCH, LENGTH = 20000, 512, 64, 1536, 32, 64
BUCKETS = (16, 24, 32, 64)


def coco_like_tokens(rng, batch, length):
  """Captions whose lengths (with <start>/<end>) are about 13 +- 3 tokens, as in COCO."""
  tokens = np.zeros((batch, length), np.int32)
  lengths = np.clip(rng.normal(13, 3, size=batch).round(), 8, 40).astype(int)
  for row_, n in enumerate(lengths):
    tokens[row_, :n] = rng.integers(4, VOCAB, size=n)
    tokens[row_, 0], tokens[row_, n - 1] = 2, 3
  return tokens


def run(quick: bool = False) -> list[dict]:
  repeat = 3 if quick else 10
  rng = np.random.default_rng(0)
  features = rng.normal(size=(BATCH, POSITIONS, FEATURE_DIM)).astype(np.float32)
  tokens = coco_like_tokens(rng, BATCH, LENGTH)
  targets = np.asarray(training.shift_targets(tokens))
  train_model, _ = seed_keras.build_models(vocab_size=VOCAB, units=UNITS, positions=POSITIONS,
                                           feature_dim=FEATURE_DIM, max_length=LENGTH)
  params = jax.tree.map(jnp.asarray, seed_keras.to_jaxcap(train_model))
  train_model.compile(optimizer=seed_keras.seed_optimizer(), loss=seed_keras.seed_loss)

  optimizer = training.keras_adam(1e-3)
  step = training.make_train_step(optimizer)
  n = jax.local_device_count()
  sharded = (training.shard(features, n), training.shard(tokens, n))
  state = [training.replicate(training.init_state(params, optimizer))]

  def ours(shards=sharded):
    state[0], loss = step(state[0], *shards)
    return loss

  t_ours = timeit(ours, repeat=repeat)
  t_keras = timeit(lambda: train_model.train_on_batch([tokens, features], targets),
                   repeat=repeat)
  config = (f"batch {BATCH}, length {LENGTH}, vocab {VOCAB}, units {UNITS}, "
            f"{POSITIONS}x{FEATURE_DIM} features, float32")
  rows = [row("train step vs seed Keras train_on_batch", config, 1 / t_ours, 1 / t_keras,
              "steps/s")]

  # Achieved FLOP/s vs a matmul of the step's dominant shape, measured here and now.
  lowered = jax.jit(lambda p, f, t: jax.value_and_grad(training.loss)(p, f, t)).lower(
      params, features, tokens)
  cost = lowered.compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  step_flops = float(cost.get("flops", 0.0))
  a = jnp.asarray(rng.normal(size=(BATCH * LENGTH, UNITS)).astype(np.float32))
  b = jnp.asarray(rng.normal(size=(UNITS, VOCAB)).astype(np.float32))
  matmul = jax.jit(lambda a, b: a @ b)
  t_matmul = timeit(lambda: matmul(a, b), repeat=repeat)
  matmul_rate = 2 * BATCH * LENGTH * UNITS * VOCAB / t_matmul
  ours_rate = step_flops / t_ours
  rows.append(row("train step FLOP/s vs dense matmul", config + " (FLOPs: XLA cost analysis "
                  "of loss+grad, optimizer excluded)", ours_rate / 1e9, matmul_rate / 1e9,
                  "GFLOP/s", note=f"matmul ({BATCH * LENGTH}x{UNITS})@({UNITS}x{VOCAB})"))

  # Padding: the same batch, padded to 64 vs trimmed to its bucket.
  trimmed = pipeline.trim_to_bucket(tokens, BUCKETS)
  loss_full = float(training.loss(params, features, tokens))
  loss_trim = float(training.loss(params, features, trimmed))
  t_trim = timeit(lambda: ours((training.shard(features, n), training.shard(trimmed, n))),
                  repeat=repeat)
  rows.append(row("train step, bucketed vs padded to 64", f"{config}; COCO-like lengths "
                  f"(mean 13), buckets {BUCKETS} -> {trimmed.shape[1]}", 1 / t_trim, 1 / t_ours,
                  "steps/s", note=f"loss difference {abs(loss_full - loss_trim):.2e}"))
  return rows


if __name__ == "__main__":
  common.main(run)
