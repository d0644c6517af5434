"""Decoder train steps per second on precomputed features, at the seed's sizes.

1. jaxcap's step (`training.make_train_step` with `keras_adam`) vs the seed's Keras model
   (`train_on_batch` with `seed_loss` and `seed_optimizer`): same shapes, same initial
   weights (converted with `seed_keras.to_jaxcap`), same batch. The Keras model runs on
   Keras's JAX backend in this process and, when TensorFlow is installed, on its TensorFlow
   backend (the seed's runtime) in a subprocess. The first step's losses are compared too.
2. jaxcap's achieved FLOP/s — the step's FLOPs from XLA's cost analysis of an equivalent
   single-device jitted loss+grad+Adam function, over the measured step time — against a
   dense float32 matmul of the step's dominant shape, the vocabulary projection
   (batch*length, units) @ (units, vocab), timed in the same run.
3. Padding: captions padded to 64 as the seed does vs trimmed per batch by
   `pipeline.trim_to_bucket` to buckets (16, 24, 32, 64), on COCO-like caption lengths; the
   loss must not change (the largest absolute difference is printed).

    python bench/train.py [--quick]
"""

from __future__ import annotations

import functools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common, seed_ref  # pylint: disable=wrong-import-position

import jax  # pylint: disable=wrong-import-position,g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=wrong-import-position,g-import-not-at-top
import numpy as np  # pylint: disable=wrong-import-position,g-import-not-at-top
import optax  # pylint: disable=wrong-import-position,g-import-not-at-top

from jaxcap import decoders, training  # pylint: disable=wrong-import-position
from tests import seed_keras  # pylint: disable=wrong-import-position
from jaxcap.data import pipeline  # pylint: disable=wrong-import-position

VOCAB, UNITS, POSITIONS, FEATURE_DIM, BATCH, LENGTH = 20000, 512, 64, 1536, 32, 64
BUCKETS = (16, 24, 32, 64)
START, END = 2, 3
SIZES = (f"batch {BATCH}, length {LENGTH}, vocab {VOCAB}, units {UNITS}, "
         f"{POSITIONS}x{FEATURE_DIM} features, float32")


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


def analytic_flops(batch: int, length: int) -> float:
  """Matmul FLOPs of one train step by hand: forward, plus twice that backward (the encoder
  Dense once more only: its input, the features, needs no gradient)."""
  encoder = 2 * batch * POSITIONS * FEATURE_DIM * UNITS
  gru = 2 * 2 * batch * length * UNITS * 3 * UNITS  # input and recurrent kernels
  attention = 2 * 2 * batch * length * POSITIONS * UNITS  # scores and context
  logits = 2 * batch * length * UNITS * VOCAB
  return 2 * encoder + 3 * (gru + attention + logits)


def run(quick: bool = False) -> list[dict]:
  repeat = 3 if quick else 10
  rng = np.random.default_rng(0)
  features = rng.normal(size=(BATCH, POSITIONS, FEATURE_DIM)).astype(np.float32)
  tokens = coco_like_tokens(rng, BATCH, LENGTH)
  targets = np.asarray(training.shift_targets(tokens))
  train_model, _ = seed_keras.build_models(vocab_size=VOCAB, units=UNITS, positions=POSITIONS,
                                           feature_dim=FEATURE_DIM, max_length=LENGTH)
  params = jax.tree.map(jnp.asarray, seed_keras.to_jaxcap(train_model))
  rows = []

  # The seed on TensorFlow first, while the Keras weights are still the initial ones.
  tf_name = "train step: jaxcap vs seed Keras train_on_batch, Keras on TensorFlow"
  try:
    tf_result = seed_ref.run_tensorflow(
        "train", train_model, {"features": features, "tokens": tokens, "targets": targets},
        {"sizes": dict(vocab_size=VOCAB, units=UNITS, positions=POSITIONS,
                       feature_dim=FEATURE_DIM, max_length=LENGTH), "repeat": repeat})
  except seed_ref.Unavailable as e:
    tf_result = None
    rows.append(common.skipped(tf_name, SIZES, str(e)))

  # jaxcap: the pmapped step, as the trainer runs it.
  optimizer = training.keras_adam(1e-3)
  spec = decoders.DecoderSpec("gru", vocab_size=VOCAB, units=UNITS, feature_dim=FEATURE_DIM,
                              positions=POSITIONS, max_length=LENGTH)
  step = training.make_train_step(optimizer, spec)
  n = jax.local_device_count()
  state = [training.replicate(training.init_state(params, optimizer))]

  def ours(batch_tokens=tokens, batch_features=features):
    state[0], loss = step(state[0], training.shard(batch_features, n),
                          training.shard(batch_tokens, n))
    return loss

  # The seed's Keras model on Keras's JAX backend.
  train_model.compile(optimizer=seed_keras.seed_optimizer(), loss=seed_keras.seed_loss)

  def keras_step(batch_tokens=tokens, batch_features=features):
    return train_model.train_on_batch([batch_tokens, batch_features],
                                      np.asarray(training.shift_targets(batch_tokens)))

  first_loss_ours = float(ours()[0])  # both compile, from the same weights
  first_loss_keras = float(np.asarray(keras_step()))
  t = common.interleaved({"ours": ours, "keras": keras_step}, repeat=repeat, warmup=1)
  t_ours, t_keras = t["ours"], t["keras"]
  rows.insert(0, common.row(
      "train step: jaxcap vs seed Keras train_on_batch, Keras on JAX", SIZES, 1 / t_ours,
      1 / t_keras, "steps/s",
      note=f"first-step loss |jaxcap - Keras| = {abs(first_loss_ours - first_loss_keras):.1e}"))
  if tf_result is not None:
    rows.insert(1, common.row(
        tf_name, SIZES, 1 / t_ours, 1 / tf_result["seconds"], "steps/s",
        note=f"first-step loss |jaxcap - Keras| = "
             f"{abs(first_loss_ours - tf_result['first_loss']):.1e}"))

  # Achieved FLOP/s: XLA's count for a single-device loss+grad+Adam step over the measured
  # step time, against a matmul of the vocabulary projection's shape timed now.
  def single_device_step(st, f, t):
    loss, grads = jax.value_and_grad(training.loss)(st.params, spec, f, t)
    updates, opt_state = optimizer.update(grads, st.opt_state, st.params)
    return training.TrainState(step=st.step + 1, params=optax.apply_updates(st.params, updates),
                               opt_state=opt_state), loss

  cost = jax.jit(single_device_step).lower(
      training.init_state(params, optimizer), features, tokens).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  xla_flops = float(cost.get("flops", 0.0))
  hand_flops = analytic_flops(BATCH, LENGTH)
  a = jnp.asarray(rng.normal(size=(BATCH * LENGTH, UNITS)).astype(np.float32))
  b = jnp.asarray(rng.normal(size=(UNITS, VOCAB)).astype(np.float32))
  matmul = jax.jit(lambda a, b: a @ b)
  t_matmul = common.timeit(lambda: matmul(a, b), repeat=max(repeat, 5), warmup=2)
  matmul_rate = 2 * BATCH * LENGTH * UNITS * VOCAB / t_matmul
  rows.append(common.row(
      "train step: jaxcap achieved FLOP/s vs dense matmul", SIZES, xla_flops / t_ours / 1e9,
      matmul_rate / 1e9, "GFLOP/s",
      note=(f"XLA cost analysis {xla_flops / 1e9:.0f} GFLOP/step (loss+grad+Adam); "
            f"hand count of matmuls {hand_flops / 1e9:.0f} GFLOP/step = "
            f"{hand_flops / t_ours / matmul_rate:.2f}x; matmul ({BATCH * LENGTH}x{UNITS}) @ "
            f"({UNITS}x{VOCAB})"),
      reference_name="matmul"))

  # Padding: a stream of COCO-like batches, padded to 64 vs trimmed to their bucket.
  num_batches = 4 if quick else 12
  stream = [coco_like_tokens(rng, BATCH, LENGTH) for _ in range(num_batches)]
  trimmed = [pipeline.trim_to_bucket(t, BUCKETS) for t in stream]
  loss_fn = jax.jit(functools.partial(training.loss, spec=spec))
  loss_diff = max(abs(float(loss_fn(params, features=features, tokens=t))
                      - float(loss_fn(params, features=features, tokens=c)))
                  for t, c in zip(stream, trimmed))

  def run_stream(batches):
    def go():
      for t in batches:
        loss = ours(t)
      return loss
    return go

  for t in {c.shape[1]: c for c in trimmed}.values():
    jax.block_until_ready(ours(t))  # compile each bucket's shape
  t = common.interleaved(
      {"padded": run_stream(stream), "trimmed": run_stream(trimmed),
       "keras": lambda: [keras_step(c) for c in stream][-1]},
      repeat=1 if quick else 3, warmup=0)
  t_padded, t_trimmed, t_keras_padded = (t[k] / num_batches for k in ("padded", "trimmed",
                                                                      "keras"))
  lengths = sorted(c.shape[1] for c in trimmed)
  stream_config = (f"{SIZES}; {num_batches} batches, caption lengths ~13+-3 (8..40), "
                   f"buckets {BUCKETS} -> lengths {lengths}")
  rows.append(common.row(
      "train step: trimmed to length buckets vs padded to 64 (both jaxcap)", stream_config,
      1 / t_trimmed, 1 / t_padded, "steps/s",
      note=f"max |loss trimmed - loss padded| = {loss_diff:.1e}", reference_name="padded"))
  rows.append(common.row(
      "train step as each program trains: jaxcap trimmed vs seed Keras (JAX) padded to 64",
      stream_config, 1 / t_trimmed, 1 / t_keras_padded, "steps/s",
      note="same loss; the seed always pads to 64"))
  return rows


if __name__ == "__main__":
  common.main(run)
