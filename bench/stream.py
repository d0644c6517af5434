"""Training from a feature cache larger than the batch: memory stays bounded.

Writes a synthetic feature cache (`--images` rows of `--grid` float16 features, the cache's
features.npy layout), then trains a small GRU for `--steps` steps reading it through the same
path as train.py (`pipeline.TrainBatches`, Grain, a memory map), as process 0 of
`--shards` data shards (`--processes` of them: this process holds shards/processes of them).
Prints one JSON line: peak RSS (VmHWM), anonymous RSS at the end (RssAnon: what the kernel
cannot drop; mapped file pages are dropped under memory pressure), steps per second.

    python bench/stream.py --images 200000 --grid 4x32 --steps 300
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import jax  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from jaxcap import training  # pylint: disable=wrong-import-position
from jaxcap.data import pipeline, text  # pylint: disable=wrong-import-position
from jaxcap.model import decoders  # pylint: disable=wrong-import-position


def status_kb(field: str) -> int:
  with open("/proc/self/status") as f:
    return next(int(l.split()[1]) for l in f if l.startswith(field + ":"))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--images", type=int, default=200_000)
  parser.add_argument("--grid", default="4x32", help="positions x feature size")
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--processes", type=int, default=1, help="simulated: hold 1/processes")
  parser.add_argument("--dir", default="", help="where the cache goes (default: a temp dir)")
  args = parser.parse_args()
  positions, dim = (int(x) for x in args.grid.split("x"))
  folder = args.dir or tempfile.mkdtemp(prefix="jaxcap_stream_")
  path = os.path.join(folder, "features.npy")
  start = time.perf_counter()
  features = np.lib.format.open_memmap(path, "w+", np.float16, (args.images, positions, dim))
  rng = np.random.default_rng(0)
  for lo in range(0, args.images, 8192):  # written in chunks: never all in memory
    hi = min(lo + 8192, args.images)
    features[lo:hi] = rng.normal(size=(hi - lo, positions, dim)).astype(np.float16)
  features.flush()
  del features
  write_s = time.perf_counter() - start

  words = ["a", "red", "blue", "green", "circle", "square", "left", "of", "above"]
  captions = [[" ".join(rng.choice(words, 5))] for _ in range(args.images)]
  vocab = text.Vocabulary.build([c[0] for c in captions], 50)
  ranges = pipeline.shard_ranges(args.images, args.processes)
  first, stop = ranges[0]  # this process: shard 0 of `processes`
  mapped = np.lib.format.open_memmap(path, "r")[first:stop]
  data = pipeline.with_shards(pipeline.make_caption_set(
      mapped, captions, vocab, 8, False), ranges, range(1))
  spec = decoders.DecoderSpec("gru", vocab_size=len(vocab), units=32, feature_dim=dim,
                              positions=positions)
  optimizer = training.keras_adam(1e-3)
  mesh = training.data_mesh()
  state = training.init_train_state(decoders.init(jax.random.key(0), spec),
                                    optimizer, mesh)
  step = training.TrainStep(optimizer, spec, mesh=mesh)
  batches = pipeline.TrainBatches(data, args.batch, seed=0).iterator(args.steps)
  rss_before = status_kb("VmRSS")
  start = time.perf_counter()
  for _ in range(args.steps):
    feats, tokens = next(batches)
    state, metrics = step(state, feats, tokens)
  train_s = time.perf_counter() - start
  result = {
      "images": args.images, "grid": args.grid, "processes": args.processes,
      "images_held": stop - first, "steps": args.steps, "batch": args.batch,
      "cache_mb": round(os.path.getsize(path) / 2**20, 1),
      "peak_rss_mb": round(status_kb("VmHWM") / 1024, 1),
      "rss_before_training_mb": round(rss_before / 1024, 1),
      "anon_rss_end_mb": round(status_kb("RssAnon") / 1024, 1),
      "write_s": round(write_s, 1), "steps_per_s": round(args.steps / train_s, 1),
      "final_loss": round(float(metrics["loss"]), 3),
  }
  print(json.dumps(result))
  if not args.dir:
    os.remove(path)
    os.rmdir(folder)


if __name__ == "__main__":
  main()
