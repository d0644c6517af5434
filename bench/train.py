"""Decoder train steps per second on precomputed features, at the seed's sizes.

For each decoder, on two batches: (a) "coco", the seed's batch, captions of COCO-like
lengths (~13 +- 3 tokens) padded to 64; (b) "full", every one of the 64 positions a real
token (nothing to skip):
1. jaxcap's step (`training.make_train_step` with `keras_adam`, called as `train.py` calls
   it) vs the seed's Keras model (`train_on_batch` with `seed_loss` and `seed_optimizer`) on
   Keras's TensorFlow backend, the seed's runtime (`seed_ref.TensorFlowTrainer`, a
   subprocess timed one step at a time in alternation with jaxcap's): same weights
   (converted with `seed_keras.to_jaxcap`), same batch; the first step's losses from the
   same initial weights are compared. "gru" is the seed; "gru_mha" is Keras's
   MultiHeadAttention variant; the transformer has no Keras model, so its reference is
   jaxcap's own step projecting every padded position (what jaxcap did before the packed loss).
2. Achieved FLOP/s counting only useful FLOPs (`useful_flops`: the matmuls at positions that
   have a real target, forward and backward) over the measured step time, against a bare
   float32 matmul of the vocabulary projection's shape timed in the same run.

    python bench/train.py [--quick]
"""

from __future__ import annotations

import functools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import jax  # pylint: disable=wrong-import-position,g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=wrong-import-position,g-import-not-at-top
import numpy as np  # pylint: disable=wrong-import-position,g-import-not-at-top

from bench import common, seed_ref  # pylint: disable=wrong-import-position
from jaxcap import training
from jaxcap.model import decoders  # pylint: disable=wrong-import-position
from tests import seed_keras  # pylint: disable=wrong-import-position

VOCAB, UNITS, POSITIONS, FEATURE_DIM, BATCH, LENGTH = 20000, 512, 64, 1536, 32, 64
START, END = 2, 3
SIZES = (f"batch {BATCH}, length {LENGTH}, vocab {VOCAB}, units {UNITS}, "
         f"{POSITIONS}x{FEATURE_DIM} features, float32")
GRU_KINDS = ("gru", "gru_mha")  # both built by the Keras seed (seed_keras)


def coco_like_tokens(rng: np.random.Generator, batch: int, length: int) -> np.ndarray:
  """Padded captions whose lengths (with <start> and <end>) are drawn around 13 +- 3 tokens,
  clipped to 8..40, about COCO's mix."""
  tokens = np.zeros((batch, length), np.int32)
  lengths = np.clip(np.rint(rng.normal(13.0, 3.0, size=batch)), 8, min(40, length))
  for i, n in enumerate(lengths.astype(int)):
    tokens[i, :n] = rng.integers(4, VOCAB, size=n)
    tokens[i, 0], tokens[i, n - 1] = START, END
  return tokens


def all_real_tokens(rng: np.random.Generator, batch: int, length: int) -> np.ndarray:
  """Captions that fill every position (<start> first, no padding): nothing to skip."""
  tokens = rng.integers(4, VOCAB, size=(batch, length)).astype(np.int32)
  tokens[:, 0] = START
  return tokens


def batch_tokens(rng: np.random.Generator, captions: str, batch: int, length: int):
  """"coco" (`coco_like_tokens`) or "full" (`all_real_tokens`) captions (batch, length)."""
  return (coco_like_tokens if captions == "coco" else all_real_tokens)(rng, batch, length)


def decoder_spec(kind: str, length: int = LENGTH) -> decoders.DecoderSpec:
  """Each decoder at the seed's sizes; the transformer with 2 layers of 8 heads."""
  extra = {"gru": {}, "gru_mha": dict(num_heads=8),
           "transformer": dict(num_heads=8, num_layers=2)}[kind]
  return decoders.DecoderSpec(kind, vocab_size=VOCAB, units=UNITS, feature_dim=FEATURE_DIM,
                              positions=POSITIONS, max_length=length, **extra)


def useful_flops(spec: decoders.DecoderSpec, tokens: np.ndarray) -> float:
  """Matmul FLOPs a train step cannot avoid: those at positions with a real target, forward
  plus twice that backward (the encoder Dense once more only: the features need no
  gradient). Embedding lookups, softmax, LayerNorm, Adam are not counted."""
  real = int((tokens[:, 1:] != 0).sum())  # positions with a real target
  u, p, b = spec.units, spec.positions, tokens.shape[0]
  encoder = 2 * b * p * spec.feature_dim * u
  per_position = 2 * u * spec.vocab_size  # the projection
  if spec.kind in GRU_KINDS:
    per_position += 2 * 2 * u * 3 * u  # GRU input and recurrent kernels
    per_position += 2 * 2 * p * u  # attention scores and context
    if spec.kind == "gru_mha":
      encoder += 2 * 2 * b * p * u * u  # keys and values of the grid
      per_position += 2 * 2 * u * u  # query and output projections
  else:
    length = tokens.shape[1]
    encoder += spec.num_layers * 2 * 2 * b * p * u * u  # cross-attention keys and values
    per_position += spec.num_layers * (
        2 * 4 * u * u + 2 * 2 * u * u  # self q, k, v, out; cross q, out
        + 2 * 2 * length / 2 * u  # causal self-attention, on average half the positions
        + 2 * 2 * p * u  # cross-attention scores and context
        + 2 * 2 * u * spec.hidden_dim)  # MLP
  return 2 * encoder + 3 * real * per_position


def run(quick: bool = False) -> list[dict]:
  repeat = 3 if quick else 8
  rng = np.random.default_rng(0)
  features = rng.normal(size=(BATCH, POSITIONS, FEATURE_DIM)).astype(np.float32)
  batches = {"coco": coco_like_tokens(rng, BATCH, LENGTH),
             "full": all_real_tokens(rng, BATCH, LENGTH)}
  describe = {name: f"{name}: {int((t[:, 1:] != 0).sum())} of {BATCH * LENGTH} positions "
                    f"with a real target" for name, t in batches.items()}
  optimizer = training.keras_adam(1e-3)
  rows, useful_rates = [], {}
  for kind in decoders.KINDS:
    spec = decoder_spec(kind)
    sizes = f"{kind}, {SIZES}" + (", 2 layers of 8 heads" if kind == "transformer" else
                                   ", 8 heads" if kind == "gru_mha" else "")
    trainer, problem = None, ""
    if kind in GRU_KINDS:
      build = dict(vocab_size=VOCAB, units=UNITS, positions=POSITIONS,
                   feature_dim=FEATURE_DIM, max_length=LENGTH)
      if kind == "gru_mha":
        build.update(attention="multi_head", num_heads=8, key_dim=UNITS // 8)
      train_model, _ = seed_keras.build_models(**build)
      params = jax.tree.map(jnp.asarray, seed_keras.to_jaxcap(train_model))
      try:
        trainer = seed_ref.TensorFlowTrainer(
            train_model, {name: (t, features, np.asarray(training.shift_targets(t)))
                          for name, t in batches.items()}, build)
      except seed_ref.Unavailable as e:
        problem = str(e)
    else:
      params = decoders.init(jax.random.key(0), spec)
    step = training.make_train_step(optimizer, spec)
    fresh = lambda: training.init_train_state(params, optimizer)  # pylint: disable=cell-var-from-loop
    state = [fresh()]

    def ours(name, padded=False):
      # padded: every position projected, as main did before the packed loss
      state[0], metrics = step(state[0], features, batches[name], pack=not padded)  # pylint: disable=cell-var-from-loop
      return metrics["loss"]

    try:
      for name, tokens in batches.items():
        state[0] = fresh()
        first_ours = float(ours(name))
        programs = {"jaxcap": functools.partial(ours, name)}
        if trainer is not None:
          trainer.reset()
          first_ref = trainer.step(name)
          note = f"first-step loss |jaxcap - Keras| = {abs(first_ours - first_ref):.1e}"

          def keras_step(name=name):
            trainer.step(name)  # pylint: disable=cell-var-from-loop
            return trainer.last_seconds
          programs["reference"] = keras_step
          reference = "Keras on TensorFlow"
        else:
          state[0] = fresh()
          first_ref = float(ours(name, padded=True))
          note = (f"first-step loss |packed - padded| = {abs(first_ours - first_ref):.1e}" +
                  (f"; Keras on TensorFlow skipped: {problem}" if problem else ""))
          programs["reference"] = functools.partial(ours, name, padded=True)
          reference = "jaxcap projecting every position"
        t = common.interleaved(programs, repeat=repeat, warmup=1)
        config = f"{sizes}; {describe[name]}"
        rows.append(common.row(f"train step ({name}): jaxcap vs {reference}", config,
                               1 / t["jaxcap"], 1 / t["reference"], "steps/s", note=note,
                               reference_name=reference))
        flops = useful_flops(spec, tokens)
        useful_rates[(kind, name)] = (flops, t["jaxcap"], t["reference"], config)
    finally:
      if trainer is not None:
        trainer.close()
    del state[0]

  # Useful FLOP/s against a bare matmul of the vocabulary projection's shape, timed now.
  a = jnp.asarray(rng.normal(size=(BATCH * LENGTH, UNITS)).astype(np.float32))
  b = jnp.asarray(rng.normal(size=(UNITS, VOCAB)).astype(np.float32))
  matmul = jax.jit(lambda a, b: a @ b)
  t_matmul = common.timeit(lambda: matmul(a, b), repeat=max(repeat, 5), warmup=2)
  matmul_rate = 2 * BATCH * LENGTH * UNITS * VOCAB / t_matmul
  for (kind, name), (flops, t_ours, t_ref, config) in useful_rates.items():
    if kind == "transformer":
      continue
    rows.append(common.row(
        f"train step ({name}): jaxcap useful FLOP/s vs bare matmul", config,
        flops / t_ours / 1e9, matmul_rate / 1e9, "GFLOP/s", reference_name="matmul",
        note=(f"{flops / 1e9:.1f} useful GFLOP/step; Keras on TensorFlow reaches "
              f"{flops / t_ref / matmul_rate:.2f} of the matmul rate; matmul "
              f"({BATCH * LENGTH}x{UNITS}) @ ({UNITS}x{VOCAB})")))
  return rows


if __name__ == "__main__":
  common.main(run)
