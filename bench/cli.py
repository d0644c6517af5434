"""Wall time of `sample.py` for one image: the first run (compiles) and the second (JAX's
persistent compilation cache turns compiling into a load).

    python bench/cli.py [--quick]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import common
from common import row

TINY = ["--config.data.num_train=64", "--config.data.num_val=32", "--config.data.num_test=8",
        "--config.train.num_steps=2", "--config.train.batch_size=16",
        "--config.train.checkpoint_every=2", "--config.train.eval_every=2",
        "--config.train.eval_examples=8", "--config.train.log_every=2"]


def run(quick: bool = False) -> list[dict]:
  del quick
  with tempfile.TemporaryDirectory() as tmp:
    workdir, cache = os.path.join(tmp, "run"), os.path.join(tmp, "cache")
    env = dict(os.environ, JAXCAP_CACHE_DIR=cache)
    trained = subprocess.run(
        [sys.executable, "train.py", "--config", "configs/quickstart.py", "--workdir", workdir]
        + TINY, cwd=common.ROOT, capture_output=True, text=True, env=env)
    if trained.returncode:
      return [row("sample.py one image", "", 0.0, None, "s",
                  note="skipped: training the tiny model failed: " + trained.stderr[-200:])]
    from jaxcap.data import shapes  # pylint: disable=g-import-not-at-top
    [(image, _)] = shapes.write_examples(tmp, seed=1, start=0, count=1)
    times = []
    for _ in range(2):
      start = time.perf_counter()
      out = subprocess.run([sys.executable, "sample.py", "--workdir", workdir, "--greedy",
                            "--image", image], cwd=common.ROOT, capture_output=True, text=True,
                           env=env)
      times.append(time.perf_counter() - start)
      if out.returncode:
        return [row("sample.py one image", "", 0.0, None, "s",
                    note="failed: " + out.stderr[-200:])]
  return [row("sample.py one image: second run vs first", "MobileNetV2 quickstart model, "
              "greedy, persistent compilation cache", times[1], times[0], "s wall",
              ratio=times[0] / times[1])]


if __name__ == "__main__":
  common.main(run)
