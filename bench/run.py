"""Runs the benchmarks, prints a markdown table and the speed goals, writes results.{md,json}
and replaces the table in docs/benchmarks.md.

    python bench/run.py [--quick] [--json] [--only decode,decode_floor,train,encoders,cli,scst]

Every ratio compares programs run side by side in this one process (or its subprocesses), on
the same inputs and weights, on this machine. The machine may be shared: the share of its CPU
that other processes took during each benchmark is printed with the results, and the
programs within a comparison are timed in alternating rounds so such load hits both alike.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # pylint: disable=wrong-import-position

BENCHMARKS = ("decode", "decode_floor", "train", "encoders", "cli", "scst")
ALIASES = {"train_step": "train"}


def _find(rows, benchmark: str, config: str = ""):
  return next((r for r in rows if r["benchmark"] == benchmark and config in r["config"]
               and r["ratio"] is not None), None)


def goals(rows) -> list[dict]:
  """The project's speed goals, checked against this run's rows (absent rows: not checked)."""
  checks = []

  def check(goal, r, value, met):
    if r is not None:
      checks.append({"goal": goal, "measured": value(r), "met": bool(met(value(r))),
                     "row": f"{r['benchmark']} | {r['config']}"})

  for backend in ("JAX", "TensorFlow"):
    for length, label in (("max length 64", "max length 64"),
                          ("realistic: max length 13", "max length 13")):
      r = _find(rows, f"decode (a) compiled vs (b) seed Keras loop, Keras on {backend}",
                f"batch 1, {length}")
      check(f"compiled decoding at batch 1 >= 50x the seed's Keras loop "
            f"(Keras on {backend}, {label})", r, lambda r: r["ratio"], lambda x: x >= 50)
  # The seed's GRU, same weights and batch, Keras on TensorFlow (the seed's runtime).
  r = _find(rows, "train step (coco): jaxcap vs Keras on TensorFlow", "gru, ")
  check("train step >= 2.5x the seed's Keras step on TensorFlow (the seed's batch: COCO-like "
        "captions padded to 64)", r, lambda r: r["ratio"], lambda x: x >= 2.5)
  r = _find(rows, "train step (full): jaxcap vs Keras on TensorFlow", "gru, ")
  check("train step >= 1.1x the seed's Keras step on TensorFlow (every position a real token)",
        r, lambda r: r["ratio"], lambda x: x >= 1.1)
  r = _find(rows, "train step (full): jaxcap useful FLOP/s vs bare matmul", "gru, ")
  check("train step (every position real) >= 50% of the bare matmul rate", r,
        lambda r: r["ratio"], lambda x: x >= 0.5)
  for kind in ("gru", "gru_mha", "transformer"):
    r = _find(rows, f"decode floor ({kind}): measured vs bytes/streaming rate", "batch 1,")
    check(f"batch-1 greedy decoding ({kind}) within 1.3x of its fp32 floor (the bytes a step "
          "reads at the streaming rate)", r, lambda r: r["ratio"], lambda x: x <= 1.3)
  r = _find(rows, "sample.py one image: second run vs first run")
  check("second-run sample.py for one image < 3 s", r, lambda r: r["jaxcap"],
        lambda x: x < 3.0)
  return checks


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--quick", action="store_true",
                 help="fewer repetitions (about 5 minutes on a 2-core CPU)")
  p.add_argument("--json", action="store_true", help="also print the results as JSON")
  p.add_argument("--only", default=",".join(BENCHMARKS),
                 help=f"comma-separated subset of {','.join(BENCHMARKS)}")
  p.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)),
                 help="folder for results.md and results.json")
  p.add_argument("--doc", default=common.DOC,
                 help="markdown file whose bench/run.py section gets this run's table "
                      "('' to leave it alone)")
  args = p.parse_args(argv)
  names = [ALIASES.get(n, n) for n in args.only.split(",") if n]
  unknown = set(names) - set(BENCHMARKS)
  if unknown:
    p.error(f"unknown benchmarks: {', '.join(sorted(unknown))}; choose from "
            f"{', '.join(BENCHMARKS)}")
  start = time.perf_counter()
  total_load = common.CpuLoad()
  rows, loads = [], {}
  for name in names:
    t, load = time.perf_counter(), common.CpuLoad()
    try:
      rows.extend(importlib.import_module(f"bench.{name}").run(quick=args.quick))
    except Exception as e:  # pylint: disable=broad-except
      traceback.print_exc()
      rows.append(common.skipped(name, "", f"the benchmark raised {type(e).__name__}: "
                                 f"{str(e).splitlines()[0][:200] if str(e) else ''}"))
    loads[name] = load.others()
    print(f"[{name}: {time.perf_counter() - t:.0f} s]", file=sys.stderr, flush=True)
  elapsed = time.perf_counter() - start
  others = total_load.others()
  checks = goals(rows)
  machine = common.machine()
  command = "python bench/run.py" + (" --quick" if args.quick else "") + (
      f" --only {','.join(names)}" if names != list(BENCHMARKS) else "")
  load_text = ", ".join(f"{n} {v:.0%}" for n, v in loads.items() if v is not None)
  md = [f"Machine: {machine}. Command: `{command}` ({elapsed:.0f} s).",
        "" if others is None else
        f"Other processes used {others:.0%} of the machine's CPU during the run ({load_text}).",
        "", common.table(rows), "", "Goals:"]
  md += [f"- {'met' if c['met'] else 'MISSED'}: {c['goal']}: measured {c['measured']:.3g}"
         for c in checks]
  if not checks:
    md.append("- none checked (their rows were skipped or not run)")
  text = "\n".join(md)
  print(text)
  result = {"machine": machine, "command": command, "quick": args.quick,
            "seconds": elapsed, "other_cpu_load": others, "other_cpu_load_by_benchmark": loads,
            "rows": rows, "goals": checks}
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "results.md"), "w") as f:
    f.write(text + "\n")
  with open(os.path.join(args.out, "results.json"), "w") as f:
    json.dump(result, f, indent=1)
  if args.doc and common.write_doc_section("bench/run.py", text, args.doc):
    print(f"[table written into {args.doc}]", file=sys.stderr)
  if args.json:
    print(json.dumps(result))
  return 0


if __name__ == "__main__":
  sys.exit(main())
