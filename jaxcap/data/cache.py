"""A feature cache on disk: each image is encoded once, ever, and read back without loading
the whole set into memory.

Per split and encoder, a folder holds::

    features.npy   (N, P, D) float16, a memory-mapped .npy file
    valid.npy      (N,) uint8: 1 once row i's features are on disk
    keys.json      the N image keys, in order

A row is marked valid only after its features have been flushed to disk, so a run killed at
any moment leaves no half-written row marked valid; the next run computes exactly the rows
that are not valid yet. The folder's name holds the encoder, the image size and a hash of
the keys, so caches of different encoders or image lists never mix.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Callable

import jax
import numpy as np
import tqdm

from jaxcap import images as image_io
from jaxcap.data import pipeline


def cache_folder(root: str, split: pipeline.Split, encoder_name: str, image_size: int) -> str:
  digest = hashlib.sha1("\n".join(split.keys).encode("utf-8")).hexdigest()[:12]
  return os.path.join(root, f"{encoder_name}_{image_size}px", f"{split.name}_{digest}")


def _open(folder: str, keys: list[str], shape: tuple[int, ...]):
  """(features memmap, valid memmap), created on first use."""
  features_path = os.path.join(folder, "features.npy")
  valid_path = os.path.join(folder, "valid.npy")
  if not os.path.exists(valid_path):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "keys.json"), "w", encoding="utf-8") as f:
      json.dump(keys, f)
    np.lib.format.open_memmap(features_path, "w+", np.float16, shape).flush()
    # valid.npy last: its presence says the folder is fully laid out.
    tmp = valid_path + ".tmp.npy"
    np.lib.format.open_memmap(tmp, "w+", np.uint8, (shape[0],)).flush()
    os.replace(tmp, valid_path)
  features = np.lib.format.open_memmap(features_path, "r+")
  valid = np.lib.format.open_memmap(valid_path, "r+")
  if features.shape != shape or valid.shape != (shape[0],):
    raise ValueError(f"{folder}: cache has shape {features.shape}, expected {shape}; delete "
                     "the folder to rebuild it")
  return features, valid


def encode_cached(
    split: pipeline.Split,
    feature_fn: Callable[[np.ndarray], jax.Array],
    *,
    batch_size: int,
    cache_root: str,
    encoder_name: str,
    image_size: int,
) -> tuple[np.ndarray, np.ndarray]:
  """`pipeline.encode_images` through the cache: same contract, features on disk.

  Returns the read-only (N, P, D) float16 memory map (rows of unreadable images are zeros)
  and the indices of the readable images.
  """
  folder = cache_folder(cache_root, split, encoder_name, image_size)
  # The output shape comes from one encoded image; an image that fails is tried later.
  probe_shape = None
  if os.path.exists(os.path.join(folder, "valid.npy")):
    probe_shape = np.lib.format.open_memmap(os.path.join(folder, "features.npy"), "r").shape
  features = valid = None
  if probe_shape is not None:
    features, valid = _open(folder, split.keys, probe_shape)
  todo = [i for i in range(len(split)) if valid is None or not valid[i]]
  kept = [i for i in range(len(split)) if valid is not None and valid[i]]
  skipped: list[str] = []
  with tqdm.tqdm(total=len(split), initial=len(split) - len(todo), unit="img",
                 desc=f"caching {split.name} features", disable=len(todo) < 256) as bar:
    for rows, feats in pipeline.encoded_batches(split, todo, feature_fn, batch_size, skipped,
                                                bar):
      if features is None:
        features, valid = _open(folder, split.keys, (len(split),) + feats.shape[1:])
      features[rows] = feats.astype(np.float16)
      features.flush()  # data first ...
      valid[rows] = 1
      valid.flush()  # ... then the marks
      kept.extend(rows)
  pipeline.report_skipped(split.name, skipped)
  if features is None:
    raise ValueError(f"no readable images in the {split.name} split")
  del valid
  return np.lib.format.open_memmap(os.path.join(folder, "features.npy"), "r"), np.asarray(
      sorted(kept), np.int64)
