"""Shared benchmark plumbing: the machine's name, a timer, result rows and their table.

Every benchmark module defines `run(quick: bool) -> list[dict]` (rows made by `row`) and can
be run on its own: `python bench/<name>.py [--quick]`.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)
os.environ.setdefault("KERAS_BACKEND", "jax")


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine() or "unknown CPU"


def _cores() -> int:
  try:
    return len(os.sched_getaffinity(0))  # what this process may use
  except (AttributeError, OSError):
    return os.cpu_count() or 1


@functools.lru_cache(maxsize=None)
def machine() -> str:
  """CPU model and usable core count, plus the accelerator if JAX has one."""
  import jax  # pylint: disable=g-import-not-at-top
  name = f"{_cpu_model()}, {_cores()} cores"
  device = jax.devices()[0]
  if device.platform != "cpu":
    name += f", {jax.device_count()} x {device.device_kind}"
  return name


def timings(fn, repeat: int = 5, warmup: int = 1) -> list[float]:
  """Seconds per call of `fn()` for `repeat` calls after `warmup` untimed ones (compiling),
  each waited on with `jax.block_until_ready` so asynchronous dispatch is not mistaken for
  speed."""
  import jax  # pylint: disable=g-import-not-at-top
  for _ in range(warmup):
    jax.block_until_ready(fn())
  times = []
  for _ in range(repeat):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return times


def timeit(fn, repeat: int = 5, warmup: int = 1) -> float:
  """Median seconds per call of `fn()`; see `timings`."""
  return statistics.median(timings(fn, repeat, warmup))


def interleaved(fns: dict, repeat, warmup: int = 1) -> dict:
  """Median seconds per call of each of `fns` ({name: fn}), timed in rounds that call every
  program once in turn, so a slow spell of a shared machine hits all of them alike.

  `repeat` is a count for all, or {name: count} (a program stops once it has its count).
  """
  import jax  # pylint: disable=g-import-not-at-top
  counts = repeat if isinstance(repeat, dict) else {name: repeat for name in fns}
  for _ in range(warmup):
    for fn in fns.values():
      jax.block_until_ready(fn())
  times = {name: [] for name in fns}
  for r in range(max(counts.values())):
    for name, fn in fns.items():
      if r < counts[name]:
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times[name].append(time.perf_counter() - start)
  return {name: statistics.median(t) for name, t in times.items()}


class CpuLoad:
  """How busy the machine was with other processes while a benchmark ran.

  Reads the kernel's CPU counters (/proc/stat) and subtracts this process's own CPU time
  (children included): what is left was taken by others (stolen time included), as a
  fraction of all cores over the interval. None where /proc/stat is missing.
  """

  def __init__(self):
    self._start = self._sample()

  @staticmethod
  def _sample():
    try:
      with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
      return None
    hz = os.sysconf("SC_CLK_TCK")
    busy = sum(fields[i] for i in (0, 1, 2, 5, 6, 7) if i < len(fields)) / hz
    import resource  # pylint: disable=g-import-not-at-top
    own = sum(getattr(resource.getrusage(who), attr)
              for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
              for attr in ("ru_utime", "ru_stime"))
    return time.perf_counter(), busy, own

  def others(self) -> float | None:
    end = self._sample()
    if self._start is None or end is None:
      return None
    seconds = end[0] - self._start[0]
    other = (end[1] - self._start[1]) - (end[2] - self._start[2])
    cores = os.cpu_count() or 1
    return max(0.0, other / (seconds * cores)) if seconds > 0 else None


def row(benchmark: str, config: str, ours: float | None, reference: float | None, unit: str,
        ratio: float | None = None, note: str = "", reference_name: str = "") -> dict:
  """One result. `ratio` defaults to ours / reference (so > 1 is jaxcap faster for rates)."""
  if ratio is None and ours is not None and reference:
    ratio = ours / reference
  return {"benchmark": benchmark, "config": config, "jaxcap": ours, "reference": reference,
          "reference_name": reference_name, "unit": unit, "ratio": ratio, "note": note,
          "machine": machine()}


def skipped(benchmark: str, config: str, reason: str) -> dict:
  """A row for a comparison that could not run here, with the reason."""
  return row(benchmark, config, None, None, "", note=f"skipped: {reason}")


def fmt(x: float | None, unit: str = "") -> str:
  if x is None:
    return "-"
  text = f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"
  return f"{text} {unit}".strip()


def table(rows) -> str:
  """Markdown: benchmark, configuration, jaxcap, reference, ratio, machine."""
  lines = ["| benchmark | configuration | jaxcap | reference | ratio | machine |",
           "|---|---|---|---|---|---|"]
  for r in rows:
    ratio = "-" if r["ratio"] is None else f"**{r['ratio']:.2f}x**"
    config = r["config"] + (f" ({r['note']})" if r["note"] else "")
    reference = fmt(r["reference"], r["unit"])
    if r.get("reference_name") and r["reference"] is not None:
      reference += f" ({r['reference_name']})"
    lines.append(f"| {r['benchmark']} | {config} | {fmt(r['jaxcap'], r['unit'])} | "
                 f"{reference} | {ratio} | {r['machine']} |")
  return "\n".join(lines)


DOC = os.path.join(ROOT, "docs", "benchmarks.md")


def write_doc_section(name: str, text: str, path: str = DOC) -> bool:
  """Replaces what lies between `<!-- begin NAME -->` and `<!-- end NAME -->` in `path`.

  Returns False (and leaves the file alone) when the file or its markers are missing, so a
  benchmark run from a trimmed checkout still writes its own results files.
  """
  begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
  try:
    with open(path, encoding="utf-8") as f:
      doc = f.read()
  except FileNotFoundError:
    return False
  start, stop = doc.find(begin), doc.find(end)
  if start < 0 or stop < start:
    return False
  with open(path, "w", encoding="utf-8") as f:
    f.write(doc[:start + len(begin)] + "\n" + text.strip("\n") + "\n" + doc[stop:])
  return True


def main(run) -> None:
  """`python bench/<name>.py [--quick]`: runs one benchmark and prints its table."""
  parser = argparse.ArgumentParser()
  parser.add_argument("--quick", action="store_true", help="fewer repetitions")
  load = CpuLoad()
  print(table(run(parser.parse_args().quick)))
  others = load.others()
  if others is not None:
    print(f"\nOther processes used {others:.0%} of this machine's CPU during the run.")
