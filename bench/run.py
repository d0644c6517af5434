"""Runs every benchmark, prints a markdown table and the goals, writes results.{md,json}.

    python bench/run.py [--quick] [--json] [--only decode,train_step,encoders,cli]

Every ratio is measured side by side in this one run, on this machine.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

BENCHMARKS = ("decode", "train_step", "encoders", "cli")


def _fmt(x):
  if x is None:
    return "-"
  return f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"


def table(rows) -> str:
  lines = ["| benchmark | configuration | jaxcap | reference | unit | ratio | note |",
           "|---|---|---|---|---|---|---|"]
  for r in rows:
    ratio = "-" if r["ratio"] is None else f"**{r['ratio']:.2f}x**"
    lines.append(f"| {r['benchmark']} | {r['config']} | {_fmt(r['jaxcap'])} | "
                 f"{_fmt(r['reference'])} | {r['unit']} | {ratio} | {r['note']} |")
  return "\n".join(lines)


def goals(rows) -> list[dict]:
  """The project's speed goals, checked against this run's rows."""
  def find(benchmark, config=""):
    return next((r for r in rows if r["benchmark"].startswith(benchmark)
                 and config in r["config"] and r["ratio"] is not None), None)

  checks = []
  decode = find("decode vs seed Keras loop", "batch 1, max length 64")
  if decode:
    checks.append({"goal": "compiled decoding at batch 1 >= 50x the seed's Keras loop",
                   "measured": decode["ratio"], "met": decode["ratio"] >= 50})
  train = find("train step vs seed Keras")
  if train:
    checks.append({"goal": "train step >= 1.5x the seed's Keras step",
                   "measured": train["ratio"], "met": train["ratio"] >= 1.5})
  flops = find("train step FLOP/s")
  if flops:
    checks.append({"goal": "train step >= 50% of the measured matmul rate",
                   "measured": flops["ratio"], "met": flops["ratio"] >= 0.5})
  cli = find("sample.py one image")
  if cli:
    checks.append({"goal": "second-run sample.py for one image < 3 s",
                   "measured": cli["jaxcap"], "met": cli["jaxcap"] < 3.0})
  return checks


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--quick", action="store_true", help="fewer repetitions (~5 min on 2 cores)")
  p.add_argument("--json", action="store_true", help="also print the results as JSON")
  p.add_argument("--only", default=",".join(BENCHMARKS),
                 help=f"comma-separated subset of {','.join(BENCHMARKS)}")
  p.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)),
                 help="folder for results.md and results.json")
  args = p.parse_args(argv)
  names = [n for n in args.only.split(",") if n]
  unknown = set(names) - set(BENCHMARKS)
  if unknown:
    p.error(f"unknown benchmarks: {', '.join(sorted(unknown))}")
  start = time.perf_counter()
  rows = []
  for name in names:
    t = time.perf_counter()
    rows.extend(importlib.import_module(name).run(quick=args.quick))
    print(f"[{name}: {time.perf_counter() - t:.0f} s]", file=sys.stderr)
  checks = goals(rows)
  machine = common.machine()
  md = [f"Machine: {machine}. Command: `python bench/run.py{' --quick' if args.quick else ''}`"
        f" ({time.perf_counter() - start:.0f} s).", "", table(rows), "", "Goals:"]
  md += [f"- {'met' if c['met'] else 'MISSED'}: {c['goal']} (measured {c['measured']:.3g})"
         for c in checks]
  text = "\n".join(md)
  print(text)
  result = {"machine": machine, "quick": args.quick, "rows": rows, "goals": checks}
  with open(os.path.join(args.out, "results.md"), "w") as f:
    f.write(text + "\n")
  with open(os.path.join(args.out, "results.json"), "w") as f:
    json.dump(result, f, indent=1)
  if args.json:
    print(json.dumps(result))
  return 0


if __name__ == "__main__":
  sys.exit(main())
