"""A config's splits as encoder features, and the training data built on them.

The frozen CNN runs over each split once (`split_features`): in memory, or through the
on-disk cache with `data.cache`. `build_data` then makes the vocabulary from the training
captions and one `pipeline.CaptionSet` per split.

With several JAX processes, each reads and encodes the images of its own shards only
(`pipeline.process_shards`) and holds only their features; the processes then share which
images were readable (one small all-gather), so that every process knows the same examples
and builds the same vocabulary.
"""

from __future__ import annotations

import os
from typing import Callable

import jax
import numpy as np
from jax.experimental import multihost_utils

from jaxcap.data import cache, image_files, pipeline, sources, text
from jaxcap.model import encoders


def _cache_root(config, workdir: str) -> str:
  return config.data.get("cache_dir", "") or os.path.join(workdir, "feature_cache")


def split_features(config, split: pipeline.Split,
                   feature_fn: Callable[[np.ndarray], jax.Array],
                   workdir: str, rows: range | None = None) -> tuple[np.ndarray, np.ndarray]:
  """(features (len(rows), P, D) of images `rows` (default all), indices of the readable
  ones counted from rows.start).

  With `data.cache`, features live on disk under `data.cache_dir` (default
  <workdir>/feature_cache) and are computed once; otherwise in memory, every run.
  """
  if config.data.get("cache", False):
    return cache.extract_features_cached(
        split, feature_fn, batch_size=config.encoder.batch_size,
        cache_root=_cache_root(config, workdir),
        description=cache.describe_encoder(config.encoder), rows=rows)
  return pipeline.extract_features(split, feature_fn, batch_size=config.encoder.batch_size,
                                   rows=rows)


def _prepare_shared_cache(config, split, feature_fn, workdir: str) -> None:
  """Process 0 lays out the split's cache folder before the others write into it (they would
  race to create it); on per-host disks each host then lays out its own."""
  if not config.data.get("cache", False) or jax.process_count() == 1:
    return
  if jax.process_index() == 0:
    size = encoders.image_size(config.encoder)
    shape = jax.eval_shape(feature_fn, jax.ShapeDtypeStruct((1, size, size, 3), np.float32))
    cache.prepare(split, cache_root=_cache_root(config, workdir),
                  description=cache.describe_encoder(config.encoder), shape=shape.shape[1:])
  multihost_utils.sync_global_devices(f"feature cache {split.name}")


def everyones(local: np.ndarray) -> np.ndarray:
  """The elementwise maximum of `local` over all processes (itself with one process)."""
  if jax.process_count() == 1:
    return local
  return np.asarray(multihost_utils.process_allgather(local)).max(axis=0)


def shard_count(config) -> int:
  """data.shards, or one shard per process when it is 0."""
  return config.data.get("shards", 0) or jax.process_count()


def build_data(config, feature_fn: Callable[[np.ndarray], jax.Array], workdir: str,
               split_names=("train", "val")
               ) -> tuple[text.Vocabulary, dict[str, pipeline.CaptionSet]]:
  """Extracts the features of this process's shards of each split once; returns the
  vocabulary and a CaptionSet per non-empty split (train must have images)."""
  splits = sources.splits(config.data, encoders.image_size(config.encoder),
                          image_files.resize_method_of(config.encoder))
  count = shard_count(config)
  local = pipeline.process_shards(count)
  extracted, counts = {}, []
  for name in split_names:
    split = splits[name]
    if not len(split) and name != "train":
      print(f"the {name} split has no images: skipping what needs it (for your own data, "
            f"mark some lines \"split\": \"{name}\" or raise data.{name}_fraction)")
      continue
    ranges = pipeline.shard_ranges(len(split), count)
    rows = range(ranges[local.start][0], ranges[local.stop - 1][1])
    counts.append(f"{name} {len(rows)} of {len(split)}")
    _prepare_shared_cache(config, split, feature_fn, workdir)
    features, kept = split_features(config, split, feature_fn, workdir, rows)
    readable = np.zeros(len(split), np.uint8)
    readable[rows.start + kept] = 1
    kept = np.flatnonzero(everyones(readable))  # every process's readable images
    extracted[name] = (features, split, kept, ranges, rows.start)
  print(f"process {jax.process_index()} of {jax.process_count()}: "
        f"{counts[0].split(' ', 1)[1]} images in this shard"
        + (f" ({', '.join(counts[1:])})" if counts[1:] else ""))
  train_captions = [c for i in extracted["train"][2] for c in extracted["train"][1].captions[i]]
  vocab = text.Vocabulary.build(train_captions, config.model.vocab_size,
                               max_length=config.model.max_length)
  sets = {
      name: pipeline.with_shards(pipeline.make_caption_set(
          feats, [split.captions[i] for i in kept], vocab, config.model.max_length,
          all_captions=config.data.all_captions if name == "train" else False,
          image_rows=kept, feature_offset=offset), ranges, local)
      for name, (feats, split, kept, ranges, offset) in extracted.items()
  }
  return vocab, sets
