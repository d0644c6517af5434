"""Shared benchmark plumbing: the machine's name, a timer, result rows."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)
os.environ.setdefault("KERAS_BACKEND", "jax")


def machine() -> str:
  """CPU model and core count, plus the accelerator if JAX has one."""
  import jax  # pylint: disable=g-import-not-at-top
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          cpu = line.split(":", 1)[1].strip()
          break
  except OSError:
    pass
  name = f"{cpu}, {os.cpu_count()} cores"
  device = jax.devices()[0]
  if device.platform != "cpu":
    name += f", {jax.device_count()} x {device.device_kind}"
  return name


def timeit(fn, repeat: int = 5, warmup: int = 1) -> float:
  """Median seconds per call of `fn()`, waiting for JAX's asynchronous results."""
  import jax  # pylint: disable=g-import-not-at-top
  for _ in range(warmup):
    jax.block_until_ready(fn())
  times = []
  for _ in range(repeat):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def row(benchmark: str, config: str, ours: float, reference: float | None, unit: str,
        ratio: float | None = None, note: str = "") -> dict:
  """One result. `ratio` defaults to ours / reference (higher is better for rates)."""
  if ratio is None and reference:
    ratio = ours / reference
  return {"benchmark": benchmark, "config": config, "jaxcap": ours, "reference": reference,
          "unit": unit, "ratio": ratio, "note": note, "machine": machine()}


def main(run) -> None:
  """`python bench/<name>.py [--quick]`: runs one benchmark and prints its rows."""
  parser = argparse.ArgumentParser()
  parser.add_argument("--quick", action="store_true", help="fewer repetitions")
  for result in run(parser.parse_args().quick):
    print(result)
