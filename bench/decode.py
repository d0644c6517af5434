"""Captions per second: jaxcap's compiled generation vs the seed's Keras loop vs a Python loop.

(a) jaxcap: `decoding.decode` jitted whole (a `lax.while_loop`), tokens copied to the host.
(b) the seed: its one-step Keras model called once per token from Python, `top_k` then a
    categorical draw, the ids pulled to the host each step (`seed_ref.seed_decode_loop`). On
    Keras's JAX backend in this process, and again on its TensorFlow backend (the runtime the
    seed used) in a subprocess when TensorFlow is installed.
(c) `decoding.python_loop`: a Python loop around a jitted jaxcap `decoders.step` +
    `choose_tokens`, with the same per-token host round trip: what a straight port of the
    seed's loop would be.

All programs use the same weights (the seed's Keras model, converted with
`seed_keras.to_jaxcap`), the same encoder features and top-10 sampling at temperature 1, at
the seed's sizes. Random weights almost never sample `<end>`, so captions run to the length
limit: 64 (the seed's limit) or 13, the "realistic" case of a caption whose `<end>` comes
after about 12 words, modelled by max_length=13 for all three programs. The batch-1 seed loop
is exactly the seed's (one image at a time); at batch 64 the Keras step model gets a batch.

Then (a) vs (c) for every decoder kind (the transformer with 2 layers of 8 heads, gru_mha
with 8 heads; random weights), at batch 1 and 64, max length 64, with ms per token.

    python bench/decode.py [--quick]
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
from bench import train as train_bench  # pylint: disable=wrong-import-position
from jaxcap import decoding
from jaxcap.model import decoders  # pylint: disable=wrong-import-position
from tests import seed_keras  # pylint: disable=wrong-import-position

VOCAB, UNITS, POSITIONS, FEATURE_DIM = 20000, 512, 64, 1536
START, END, TOP_K = 2, 3, 10
BATCHES, LENGTHS = (1, 64), (64, 13)
SPEC = decoders.DecoderSpec("gru", vocab_size=VOCAB, units=UNITS, feature_dim=FEATURE_DIM,
                            positions=POSITIONS, max_length=64)


def _config(batch: int, max_length: int) -> str:
  length = (f"max length {max_length}" if max_length == 64 else
            f"realistic: max length {max_length} for all programs (<end> after ~12 words)")
  return (f"batch {batch}, {length}, vocab {VOCAB}, units {UNITS}, "
          f"{POSITIONS}x{FEATURE_DIM} features, top-{TOP_K} sampling")


def run(quick: bool = False) -> list[dict]:
  import keras  # pylint: disable=g-import-not-at-top
  train_model, step_model = seed_keras.build_models(
      vocab_size=VOCAB, units=UNITS, positions=POSITIONS, feature_dim=FEATURE_DIM,
      max_length=64)
  params = jax.tree.map(jnp.asarray, seed_keras.to_jaxcap(train_model))
  encoder_dense = train_model.get_layer("encoder_dense")
  options = decoding.DecodeOptions("sample", top_k=TOP_K)
  loop_c = lambda spec, params, f, n, key: decoding.python_loop(
      params, spec, f, key, options, start_id=START, end_id=END, max_length=n)
  key = jax.random.key(0)
  rng = np.random.default_rng(0)
  features = {b: rng.normal(size=(b, POSITIONS, FEATURE_DIM)).astype(np.float32)
              for b in BATCHES}
  repeat = 3 if quick else 10

  def seed_repeat(batch, max_length):
    if quick:
      return 1 if batch > 1 or max_length == 64 else 2
    return 3 if batch > 1 else 5

  # The seed's loop on TensorFlow, all cases in one subprocess (TensorFlow loads once).
  tf_spec = {"sizes": dict(vocab_size=VOCAB, units=UNITS, positions=POSITIONS,
                           feature_dim=FEATURE_DIM, max_length=64),
             "start_id": START, "end_id": END,
             "cases": [{"name": f"{b}x{n}", "features": f"b{b}", "max_length": n,
                        "repeat": seed_repeat(b, n)} for b in BATCHES for n in LENGTHS]}
  try:
    tf_seconds = seed_ref.run_tensorflow(
        "decode", train_model, {f"b{b}": f for b, f in features.items()}, tf_spec)
    tf_problem = ""
  except seed_ref.Unavailable as e:
    tf_seconds, tf_problem = {}, str(e)

  rows = []
  for batch in BATCHES:
    feats = features[batch]
    feats_device = jnp.asarray(feats)
    seed_loop = lambda n, f=feats: seed_ref.seed_decode_loop(
        keras, encoder_dense, step_model, f, max_length=n, start_id=START, end_id=END)
    seed_loop(2)  # the Keras model's first-call overhead, untimed
    for max_length in LENGTHS:
      compiled = functools.partial(
          decoding.decode_jit, spec=SPEC, options=options, start_id=START, end_id=END,
          max_length=max_length)
      out = {}

      def program_a():
        out["a"] = np.asarray(compiled(params, features=feats_device, key=key)[0])
        return out["a"]

      def program_b():
        out["b"] = seed_loop(max_length)  # pylint: disable=cell-var-from-loop
        return out["b"]

      def program_c():
        out["c"] = loop_c(SPEC, params, feats_device, max_length, key)  # pylint: disable=cell-var-from-loop
        return out["c"]

      program_a(), program_c()  # compile; the seed's loop was warmed up above
      t = common.interleaved({"a": program_a, "b": program_b, "c": program_c}, warmup=0,
                             repeat={"a": repeat, "b": seed_repeat(batch, max_length),
                                     "c": repeat})
      t_a, t_b, t_c = t["a"], t["b"], t["c"]
      steps = {"a": int((out["a"] != 0).any(axis=0).sum()), "b": out["b"].shape[1],
               "c": int((out["c"] != 0).any(axis=0).sum())}
      note = ("" if set(steps.values()) == {max_length} else
              "steps run: " + ", ".join(f"{k}={v}" for k, v in steps.items()))
      config = _config(batch, max_length)
      rate = lambda seconds: batch / seconds  # pylint: disable=cell-var-from-loop
      rows.append(common.row("decode (a) compiled vs (b) seed Keras loop, Keras on JAX",
                             config, rate(t_a), rate(t_b), "captions/s", note=note))
      name = "decode (a) compiled vs (b) seed Keras loop, Keras on TensorFlow"
      if f"{batch}x{max_length}" in tf_seconds:
        rows.append(common.row(name, config, rate(t_a),
                               rate(tf_seconds[f"{batch}x{max_length}"]), "captions/s"))
      else:
        rows.append(common.skipped(name, config, tf_problem))
      rows.append(common.row("decode (a) compiled vs (c) Python loop of jitted steps", config,
                             rate(t_a), rate(t_c), "captions/s", note=note))
  rows += per_decoder(features, key, repeat, loop_c, options)
  return rows


def per_decoder(features: dict, key, repeat: int, loop_c, options) -> list[dict]:
  """(a) compiled vs (c) the Python loop for every decoder kind, max length 64."""
  rows = []
  for kind in decoders.KINDS:
    spec = train_bench.decoder_spec(kind)
    params = decoders.init(jax.random.key(0), spec)
    for batch in BATCHES:
      feats = jnp.asarray(features[batch])
      compiled = lambda: np.asarray(decoding.decode_jit(  # pylint: disable=cell-var-from-loop
          params, spec, feats, key, options, start_id=START, end_id=END, max_length=64)[0])
      loop = lambda: loop_c(spec, params, feats, 64, key)  # pylint: disable=cell-var-from-loop
      out_a, out_c = compiled(), loop()  # compile
      t = common.interleaved({"a": compiled, "c": loop}, repeat=repeat, warmup=0)
      tokens = int((out_a != 0).any(axis=0).sum())
      rows.append(common.row(
          f"decode ({kind}): (a) compiled vs (c) Python loop of jitted steps",
          f"{kind}, batch {batch}, max length 64, vocab {VOCAB}, units {UNITS}, "
          f"{POSITIONS}x{FEATURE_DIM} features, top-{TOP_K} sampling"
          + {"gru": "", "gru_mha": ", 8 heads", "transformer": ", 2 layers of 8 heads"}[kind],
          batch / t["a"], batch / t["c"], "captions/s",
          note=(f"(a) {t['a'] / tokens * 1e3:.2f} ms/token, (c) "
                f"{t['c'] / max(int((out_c != 0).any(axis=0).sum()), 1) * 1e3:.2f} ms/token")))
  return rows


if __name__ == "__main__":
  common.main(run)
