"""Decoding against its floor: the bytes a step must read, at the rate this machine streams.

At batch 1 a decoding step is a chain of matrix-vector products: it must read every weight
it uses once, so its floor is (bytes read per step) / (the rate memory streams them). The
rate is measured in the same run, interleaved with the decoders: a compiled loop of 64
chained fp32 (1x512)@(512x20000) matvecs (the vocabulary projection's shape).

Bytes a step reads (`step_bytes`): every parameter, context and cache leaf that
`decoders.step` reads (found in its jaxpr, so weights only `prepare` uses, such as the
encoder Dense or the cross-attention keys' kernels, are left out), the lookup tables
('embedding', 'positions') counted as the B rows a step gathers. The cache is counted
whole, as the step reads it (the transformer's self-attention masks the later positions).

Each decoder (gru; gru_mha 8 heads; transformer 2 blocks of 8 heads) at the seed's sizes
(vocab 20000, units 512, 64x1536 features), random parameters, greedy through
`decoding.decode_jit` for 64 steps with `<end>` unreachable, at batch 1 and 64: ms per step
(one token per caption), its floor, the ratio. At batch 64 the projection is a matmul, so
the byte floor is a lower bound that compute may exceed.

Then a request end to end, per image at batch 1 and 16: the MobileNetV2 encoder at the
quickstart's size (160 px), and the seed-size GRU decoding a 13-token caption.

    python bench/decode_floor.py [--quick]
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import jax  # pylint: disable=wrong-import-position,g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=wrong-import-position,g-import-not-at-top
import numpy as np  # pylint: disable=wrong-import-position,g-import-not-at-top

from bench import common  # pylint: disable=wrong-import-position
from bench import train as train_bench  # pylint: disable=wrong-import-position
from jaxcap import decoding  # pylint: disable=wrong-import-position
from jaxcap.model import decoders  # pylint: disable=wrong-import-position

VOCAB, UNITS, POSITIONS, FEATURE_DIM = train_bench.VOCAB, train_bench.UNITS, 64, 1536
START, STEPS, CAPTION = 2, 64, 13
END = VOCAB  # no id: `<end>` is never chosen, every caption runs STEPS steps
KINDS, BATCHES, E2E_BATCHES = ("gru", "gru_mha", "transformer"), (1, 64), (1, 16)
TABLES = ("embedding", "positions")  # (N, U) lookup tables: a step reads B rows of each
MATVEC_BYTES = UNITS * VOCAB * 4


@jax.jit
def matvec_loop(kernel: jax.Array, x: jax.Array) -> jax.Array:
  """64 chained x (1, 512) @ kernel (512, 20000): each product's first 512 values feed the
  next, so none can be skipped or overlapped."""
  return jax.lax.fori_loop(0, STEPS, lambda i, x: (x @ kernel)[:, :UNITS] * 1e-3, x)


def step_bytes(params, spec: decoders.DecoderSpec, batch: int) -> tuple[int, int]:
  """(bytes of weights, bytes of context and cache) one `decoders.step` reads at `batch`."""
  features = jax.ShapeDtypeStruct((batch, spec.positions, spec.feature_dim), jnp.float32)
  context = jax.eval_shape(lambda p, f: decoders.prepare(p, spec, f), params, features)
  cache = jax.eval_shape(lambda p, c: decoders.initial_cache(p, spec, c, STEPS), params, context)
  tokens = jnp.zeros((batch,), jnp.int32)
  jaxpr = jax.make_jaxpr(lambda p, c, k: decoders.step(p, spec, c, k, tokens, 0))(
      params, context, cache).jaxpr
  read = {id(v) for eqn in jaxpr.eqns for v in eqn.invars}
  leaves = jax.tree_util.tree_flatten_with_path((params, context, cache))[0]
  weights = state = 0
  for (path, leaf), var in zip(leaves, jaxpr.invars):
    if id(var) not in read:
      continue
    nbytes = int(np.prod(leaf.shape)) * np.dtype(leaf.dtype).itemsize
    if path[0].idx == 0:  # params
      key = getattr(path[-1], "key", None)
      weights += nbytes // leaf.shape[0] * batch if key in TABLES else nbytes
    else:
      state += nbytes
  return weights, state


def _min_interleaved(fns: dict, repeat: int) -> dict:
  """Least seconds per call of each of `fns`, called in turn `repeat` times (a loaded machine
  only ever slows a call down, so the least is the closest to the program's own time)."""
  for fn in fns.values():
    jax.block_until_ready(fn())
  times = {name: [] for name in fns}
  for _ in range(repeat):
    for name, fn in fns.items():
      start = time.perf_counter()
      jax.block_until_ready(fn())
      times[name].append(time.perf_counter() - start)
  return {name: min(t) for name, t in times.items()}


def greedy(params, spec, features, max_length):
  return lambda: decoding.decode_jit(params, spec, features, jax.random.key(0),
                                     decoding.DecodeOptions("greedy"), start_id=START,
                                     end_id=END, max_length=max_length)


def floor_rows(repeat: int, batches=BATCHES, kinds=KINDS) -> list[dict]:
  rng = np.random.default_rng(0)
  kernel = jax.random.normal(jax.random.key(1), (UNITS, VOCAB), jnp.float32)
  x = jnp.ones((1, UNITS), jnp.float32)
  programs, sizes = {"matvec": lambda: matvec_loop(kernel, x)}, {}
  for kind in kinds:
    spec = train_bench.decoder_spec(kind, STEPS)
    params = decoders.init(jax.random.key(0), spec)
    for batch in batches:
      features = jnp.asarray(rng.normal(size=(batch, POSITIONS, FEATURE_DIM)), jnp.float32)
      programs[kind, batch] = greedy(params, spec, features, STEPS)
      sizes[kind, batch] = step_bytes(params, spec, batch)
  load = os.getloadavg()[0]
  t = _min_interleaved(programs, repeat)
  rate = MATVEC_BYTES * STEPS / t["matvec"]  # bytes/s
  rows = []
  for (kind, batch), (weights, state) in sizes.items():
    measured = t[kind, batch] / STEPS * 1e3
    floor = (weights + state) / rate * 1e3
    extra = {"gru": "", "gru_mha": ", 8 heads", "transformer": ", 2 blocks of 8 heads"}[kind]
    rows.append(common.row(
        f"decode floor ({kind}): measured vs bytes/streaming rate",
        f"{kind}{extra}, batch {batch}, greedy, {STEPS} steps, vocab {VOCAB}, units {UNITS}, "
        f"{POSITIONS}x{FEATURE_DIM} features, float32",
        measured, floor, "ms/step", reference_name="floor",
        note=(f"a step reads {weights / 1e6:.1f} MB of weights + {state / 1e6:.2f} MB of "
              f"context and cache; streaming {rate / 1e9:.1f} GB/s ({t['matvec'] / STEPS * 1e3:.2f}"
              f" ms per 1x512 @ 512x20000 matvec); load average {load:.1f}")))
  return rows


def end_to_end_rows(repeat: int) -> list[dict]:
  """Per image: the quickstart's encoder vs decoding a 13-token caption (seed-size GRU)."""
  from jaxcap.model.encoders import mobilenet_v2  # pylint: disable=g-import-not-at-top
  size = 160  # configs/quickstart.py's encoder.image_size
  config = (f"MobileNetV2 at {size} px; gru (vocab {VOCAB}, units {UNITS}) decoding "
            f"{CAPTION} tokens greedily")
  try:
    encoder_params, weights = mobilenet_v2.load_params(), "ImageNet weights"
  except FileNotFoundError as e:
    return [common.skipped("request end to end: encoder vs decoder", config, str(e)[:200])]
  encode = jax.jit(mobilenet_v2.features)
  rng = np.random.default_rng(0)
  programs = {}
  for batch in E2E_BATCHES:
    images = jnp.asarray(rng.random((batch, size, size, 3)), jnp.float32)
    features = encode(encoder_params, images)  # (B, 5 * 5, 1280) at 160 px
    spec = decoders.DecoderSpec("gru", vocab_size=VOCAB, units=UNITS,
                                feature_dim=features.shape[2], positions=features.shape[1])
    params = decoders.init(jax.random.key(0), spec)
    programs["encoder", batch] = lambda i=images: encode(encoder_params, i)
    programs["decoder", batch] = greedy(params, spec, features, CAPTION)
  load = os.getloadavg()[0]
  t = _min_interleaved(programs, repeat)
  rows = []
  for batch in E2E_BATCHES:
    enc, dec = t["encoder", batch] / batch * 1e3, t["decoder", batch] / batch * 1e3
    rows.append(common.row(
        "request end to end: encoder vs decoder, ms per image",
        f"batch {batch}, {config}, {weights}",
        enc, dec, "ms/image", reference_name="decoder",
        note=(f"encoder {enc / (enc + dec):.0%}, decoder {dec / (enc + dec):.0%} of "
              f"{enc + dec:.1f} ms per image; load average {load:.1f}")))
  return rows


def run(quick: bool = False) -> list[dict]:
  repeat = 5 if quick else 15
  return floor_rows(repeat) + end_to_end_rows(repeat)


def main() -> None:
  """Prints the table and writes it into docs/benchmarks.md's bench/decode_floor.py section."""
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true", help="fewer repetitions")
  quick = parser.parse_args().quick
  load = common.CpuLoad()
  rows = run(quick)
  others = load.others()
  text = "\n".join([
      f"Machine: {common.machine()}. Command: `python bench/decode_floor.py"
      f"{' --quick' if quick else ''}`. "
      + ("" if others is None else
         f"Other processes used {others:.0%} of the machine's CPU during the run."),
      "", common.table(rows)])
  print(text)
  if common.write_doc_section("bench/decode_floor.py", text):
    print(f"[table written into {common.DOC}]", file=sys.stderr)


if __name__ == "__main__":
  main()
