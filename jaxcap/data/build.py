"""A config's splits as encoder features, and the training data built on them.

The frozen CNN runs over each split once (`split_features`): in memory, or through the
on-disk cache with `data.cache`. `build_data` then makes the vocabulary from the training
captions and one `pipeline.CaptionSet` per split.
"""

from __future__ import annotations

import os
from typing import Callable

import jax
import numpy as np

from jaxcap.data import cache, image_files, pipeline, sources, text
from jaxcap.model import encoders


def split_features(config, split: pipeline.Split,
                   feature_fn: Callable[[np.ndarray], jax.Array],
                   workdir: str) -> tuple[np.ndarray, np.ndarray]:
  """(features (N, P, D) by split index, indices of the readable images) of a split.

  With `data.cache`, features live on disk under `data.cache_dir` (default
  <workdir>/feature_cache) and are computed once; otherwise in memory, every run.
  """
  if config.data.get("cache", False):
    return cache.extract_features_cached(
        split, feature_fn, batch_size=config.encoder.batch_size,
        cache_root=config.data.get("cache_dir", "") or os.path.join(workdir, "feature_cache"),
        description=cache.describe_encoder(config.encoder))
  return pipeline.extract_features(split, feature_fn, batch_size=config.encoder.batch_size)


def build_data(config, feature_fn: Callable[[np.ndarray], jax.Array], workdir: str,
               split_names=("train", "val")
               ) -> tuple[text.Vocabulary, dict[str, pipeline.CaptionSet]]:
  """Extracts the splits' features once; returns the vocabulary and a CaptionSet per
  non-empty split (train must have images)."""
  splits = sources.splits(config.data, encoders.image_size(config.encoder),
                          image_files.resize_method_of(config.encoder))
  extracted = {}
  for name in split_names:
    split = splits[name]
    if not len(split) and name != "train":
      print(f"the {name} split has no images: skipping what needs it (for your own data, "
            f"mark some lines \"split\": \"{name}\" or raise data.{name}_fraction)")
      continue
    features, kept = split_features(config, split, feature_fn, workdir)
    extracted[name] = (features, [split.captions[i] for i in kept], kept)
  train_captions = [c for caps in extracted["train"][1] for c in caps]
  vocab = text.Vocabulary.build(train_captions, config.model.vocab_size,
                               max_length=config.model.max_length)
  sets = {
      name: pipeline.make_caption_set(
          feats, caps, vocab, config.model.max_length,
          all_captions=config.data.all_captions if name == "train" else False, image_rows=kept)
      for name, (feats, caps, kept) in extracted.items()
  }
  return vocab, sets
