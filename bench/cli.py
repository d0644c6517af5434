"""Wall time of `sample.py` captioning one image: first run vs second run.

The first run compiles the encoder and the decoding loop; the second finds them in JAX's
persistent compilation cache, which sample.py keeps under $JAXCAP_CACHE_DIR/xla. Each
benchmark run uses a fresh, empty cache folder (and points JAX_COMPILATION_CACHE_DIR there
as well), so "first run" is honest; the tiny model is trained with a separate cache so
training's compilations do not warm sample.py's. Also timed: the bare interpreter start with
sample.py's imports, the floor no cache can remove.

    python bench/cli.py [--quick]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # pylint: disable=wrong-import-position

BENCHMARK = "sample.py one image: second run vs first run"
CONFIG = "quickstart config (MobileNetV2 160x160, units 256), tiny trained workdir, --greedy"
TRAIN_FLAGS = ["--config.data.num_train=64", "--config.data.num_val=32",
               "--config.data.num_test=8", "--config.train.num_steps=2",
               "--config.train.batch_size=16", "--config.train.checkpoint_every=2",
               "--config.train.eval_every=2", "--config.train.log_every=2"]
IMPORTS = ("import jax, numpy; from jaxcap import images, viz; "
           "from jaxcap.captioner import Captioner")


def _tail(text: str) -> str:
  lines = [l for l in (text or "").strip().splitlines() if l.strip()]
  return lines[-1][:200] if lines else "no output"


def _write_image(folder: str) -> str:
  """One test image: a shapes example if that module is there, else random pixels."""
  try:
    from jaxcap.data import shapes  # pylint: disable=g-import-not-at-top
    [(path, _)] = shapes.write_examples(folder, seed=1, start=0, count=1)
    return path
  except Exception:  # pylint: disable=broad-except
    import numpy as np  # pylint: disable=g-import-not-at-top
    from PIL import Image  # pylint: disable=g-import-not-at-top
    path = os.path.join(folder, "random.png")
    pixels = np.random.default_rng(0).integers(0, 256, (160, 160, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _timed(cmd, env, timeout) -> tuple[float, subprocess.CompletedProcess]:
  start = time.perf_counter()
  proc = subprocess.run(cmd, cwd=common.ROOT, env=env, capture_output=True, text=True,
                        timeout=timeout, check=False)
  return time.perf_counter() - start, proc


def run(quick: bool = False) -> list[dict]:
  del quick  # two runs are the measurement
  with tempfile.TemporaryDirectory() as tmp:
    workdir = os.path.join(tmp, "workdir")
    train_env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=os.path.join(tmp, "train_cache"),
                     JAXCAP_CACHE_DIR=os.path.join(tmp, "train_cache"))
    try:
      _, trained = _timed([sys.executable, "train.py", "--config", "configs/quickstart.py",
                           "--workdir", workdir] + TRAIN_FLAGS, train_env, timeout=900)
    except subprocess.TimeoutExpired:
      return [common.skipped(BENCHMARK, CONFIG, "training the tiny workdir took over 900 s")]
    if trained.returncode:
      return [common.skipped(BENCHMARK, CONFIG,
                             f"training the tiny workdir failed: {_tail(trained.stderr)}")]
    image = _write_image(tmp)
    cache = os.path.join(tmp, "sample_cache")  # fresh: nothing compiled yet
    env = dict(os.environ, JAXCAP_CACHE_DIR=cache,
               JAX_COMPILATION_CACHE_DIR=os.path.join(cache, "xla"))
    cmd = [sys.executable, "sample.py", "--workdir", workdir, "--image", image, "--greedy"]
    times = []
    for _ in range(2):
      seconds, out = _timed(cmd, env, timeout=600)
      if out.returncode or image not in out.stdout:
        return [common.skipped(BENCHMARK, CONFIG, f"sample.py failed: {_tail(out.stderr)}")]
      times.append(seconds)
    cached = sum(len(files) for _, _, files in os.walk(cache))
    floor, _ = _timed([sys.executable, "-c", IMPORTS], env, timeout=300)
  return [common.row(
      BENCHMARK, CONFIG, times[1], times[0], "s", ratio=times[0] / times[1],
      reference_name="first run",
      note=(f"fresh cache dir, {cached} files after run 1; python + sample.py's imports alone "
            f"{floor:.1f} s"))]


if __name__ == "__main__":
  common.main(run)
