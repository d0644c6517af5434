"""Where the train step's time goes: a `jax.profiler` trace of the seed-size step, per XLA op.

    python bench/profile_train.py [--length 64] [--captions coco|full] [--decoder gru]
                                  [--steps 3] [--trace_dir DIR]

Runs jaxcap's data-parallel train step (the one `train.py` runs) at the seed's sizes, records a
`jax.profiler` trace (viewable in TensorBoard / xprof from `--trace_dir`), reads it back with
`jax.profiler.ProfileData` and adds up each XLA op's time per step. Every op is put in one
group by what the compiled HLO says about it (its `op_name` and its shape):

- "vocabulary projection": the dots with a vocabulary-sized dimension (forward logits and the
  two backward matmuls);
- "softmax / loss": the other ops on vocabulary-sized arrays;
- "GRU recurrence": the ops inside the `lax.scan` over time, forward and backward;
- "optimizer": the ops outside the gradient (Adam, the cross-device mean);
- "other": the rest (encoder Dense, attention, LayerNorm, embedding gradient, copies).

"between ops" is the step's wall time not covered by any op: loop and dispatch overhead, and
threads waiting on each other. On CPU, XLA only records per-op events with
`--xla_cpu_enable_xprof_traceme`, which this script sets.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import sys
import tempfile
import time
from typing import NamedTuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import jax  # pylint: disable=wrong-import-position,g-import-not-at-top
import numpy as np  # pylint: disable=wrong-import-position,g-import-not-at-top

from bench import common  # pylint: disable=wrong-import-position
from bench import train as train_bench  # pylint: disable=wrong-import-position
from jaxcap import training
from jaxcap.model import decoders  # pylint: disable=wrong-import-position

VOCAB, UNITS, POSITIONS, FEATURE_DIM, BATCH = 20000, 512, 64, 1536, 32
GROUPS = ("vocabulary projection", "softmax / loss", "GRU recurrence", "optimizer", "other")

_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (.*)$")
_SHAPE = re.compile(r"\b[a-z]\w*\[([\d,]*)\]")
_OPCODE = re.compile(r"\}?\s([\w\-]+)\(([^)]*)\)")
_OP_NAME = re.compile(r'op_name="([^"]*)"')


class Op(NamedTuple):
  op_name: str  # what JAX called it: "jvp()/while/body/.../GRUCell/hz/dot_general"
  shape: tuple[int, ...]  # the output's (the first array's, for a tuple)
  is_dot: bool
  operands: tuple[str, ...]


def _computations_with_dots(hlo_text: str) -> set[str]:
  """Names of the HLO computations (fusion bodies) that contain a dot."""
  found, current = set(), None
  for line in hlo_text.splitlines():
    header = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
    if header:
      current = header.group(1)
    elif current and re.search(r"\sdot\(", line):
      found.add(current)
  return found


def hlo_ops(hlo_text: str) -> dict[str, Op]:
  """Instruction name -> Op, from compiled HLO text."""
  ops = {}
  with_dots = _computations_with_dots(hlo_text)
  for line in hlo_text.splitlines():
    m = _INSTRUCTION.match(line)
    if not m:
      continue
    name, rest = m.groups()
    shape = _SHAPE.search(rest)
    opcode = _OPCODE.search(rest)
    op_name = _OP_NAME.search(rest)
    op_name = op_name.group(1) if op_name else ""
    ops[name] = Op(
        op_name=op_name,
        shape=tuple(int(d) for d in shape.group(1).split(",") if d) if shape else (),
        is_dot=bool(opcode and opcode.group(1) == "dot")
        or any(c in with_dots for c in re.findall(r"calls=%([\w.\-]+)", rest)),
        operands=tuple(re.findall(r"%([\w.\-]+)", opcode.group(2))) if opcode else ())
  return ops


def group_of(name: str, ops: dict[str, Op], vocab: int) -> str:
  op = ops.get(name)
  if op is None:
    return "other"
  touches_vocab = vocab in op.shape or any(
      vocab in ops[o].shape for o in op.operands if o in ops)
  if touches_vocab:
    return "vocabulary projection" if op.is_dot else "softmax / loss"
  if "/while/" in op.op_name:
    return "GRU recurrence"
  if op.op_name and "jvp(" not in op.op_name:
    return "optimizer"
  return "other"


def op_times(trace_dir: str) -> dict[str, float]:
  """Total seconds per XLA op name over the trace (CPU thunks or GPU kernels)."""
  files = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)
  if not files:
    raise RuntimeError(f"no trace written under {trace_dir}")
  totals = collections.Counter()
  for plane in jax.profiler.ProfileData.from_file(max(files, key=os.path.getmtime)).planes:
    for line in plane.lines:
      for event in line.events:
        stats = dict(event.stats)
        if "hlo_op" in stats:
          totals[str(stats["hlo_op"])] += event.duration_ns / 1e9
  return totals


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--length", type=int, default=64, help="caption length (the seed pads to 64)")
  p.add_argument("--captions", choices=("coco", "full"), default="coco",
                 help="coco: caption lengths ~13+-3 padded to --length (the seed's batch); "
                      "full: every position a real token (nothing to skip)")
  p.add_argument("--decoder", choices=decoders.KINDS, default="gru")
  p.add_argument("--steps", type=int, default=3, help="profiled steps (after 2 warm-up steps)")
  p.add_argument("--trace_dir", default=None, help="keep the trace here (default: temporary)")
  args = p.parse_args(argv)
  # Read when the CPU backend starts, i.e. at the first computation below.
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_cpu_enable_xprof_traceme=true").strip()

  spec = train_bench.decoder_spec(args.decoder, args.length)
  params = decoders.init(jax.random.key(0), spec)
  rng = np.random.default_rng(0)
  features = rng.normal(size=(BATCH, POSITIONS, FEATURE_DIM)).astype(np.float32)
  tokens = train_bench.batch_tokens(rng, args.captions, BATCH, args.length)
  optimizer = training.keras_adam(1e-3)
  step = training.make_train_step(optimizer, spec)
  state = training.init_train_state(params, optimizer)
  ops = hlo_ops(step.lower(state, features, tokens).compile().as_text())

  for _ in range(2):  # compile, warm up
    state, metrics = step(state, features, tokens)
    metrics["loss"].block_until_ready()
  trace_dir = args.trace_dir or tempfile.mkdtemp(prefix="jaxcap_profile_")
  jax.profiler.start_trace(trace_dir)
  start = time.perf_counter()
  for _ in range(args.steps):
    state, metrics = step(state, features, tokens)
    metrics["loss"].block_until_ready()
  wall = (time.perf_counter() - start) / args.steps
  jax.profiler.stop_trace()

  per_op = {name: t / args.steps for name, t in op_times(trace_dir).items()}
  unknown = [n for n in per_op if n not in ops]
  groups = collections.Counter()
  for name, t in per_op.items():
    groups[group_of(name, ops, VOCAB)] += t
  # On CPU the op events of one step can overlap (two threads); share is of their sum.
  covered = sum(groups.values())
  real = int((np.asarray(tokens)[..., 1:] != 0).sum())
  print(f"Machine: {common.machine()}. jaxcap train step ({args.decoder}), batch {BATCH}, "
        f"length {args.length}, {args.captions} captions ({real} real targets), "
        f"vocab {VOCAB}, units {UNITS}, {POSITIONS}x{FEATURE_DIM} features, float32.")
  print(f"Wall time per step: {wall * 1e3:.0f} ms; XLA ops account for {covered * 1e3:.0f} ms.")
  print()
  print("| part of the step | ms/step | share of op time |")
  print("|---|---|---|")
  for g in GROUPS:
    print(f"| {g} | {groups[g] * 1e3:.0f} | {groups[g] / covered:.0%} |")
  print(f"| between ops (loop, dispatch, waits) | {max(wall - covered, 0) * 1e3:.0f} | - |")
  print()
  print("Largest ops:")
  print("| op | group | output shape | ms/step | op_name |")
  print("|---|---|---|---|---|")
  for name, t in sorted(per_op.items(), key=lambda kv: -kv[1])[:12]:
    op = ops.get(name, Op("?", (), False, ()))
    print(f"| {name} | {group_of(name, ops, VOCAB)} | {op.shape} | {t * 1e3:.1f} | "
          f"`{op.op_name.removeprefix('jit(_fun)/')}` |")
  if unknown:
    print(f"\n({len(unknown)} traced op names not found in the compiled HLO: "
          f"{', '.join(sorted(unknown)[:5])})")
  print(f"\nTrace: {trace_dir}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
