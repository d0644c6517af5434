"""A feature cache on disk: each image is encoded once, ever, and read back without loading
the whole set into memory.

Per split and encoder, a folder holds::

    features.npy   (N, P, D) float16, a memory-mapped .npy file
    stamps.npy     (N, 2) int64: (size, mtime_ns) of row i's image file when it was encoded
    valid.npy      (N,) uint8: 1 once row i's features and stamp are on disk
    keys.json      the N image keys, in order
    encoder.json   what the features depend on besides the pixels (see `describe_encoder`)

A row is marked valid only after its features and stamp have been flushed to disk, so a run
killed at any moment leaves no half-written row marked valid; the next run computes exactly
the rows that are not valid yet, and those whose image file changed since (another size or
modification time). Several processes may share a folder, each writing the rows of its own
shard (`rows`): the folder covers the whole split, so a cache written by n processes serves m.
The folder's name holds a hash of the keys and of the encoder's
description (backbone, weights file content, image size, preprocessing), so features of
another encoder, weights file or preprocessing are never read. A damaged folder (a
truncated .npy, say) is rebuilt, with a warning naming the file.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import logging
import os
from typing import Callable

import jax
import numpy as np
import tqdm

from jaxcap.data import disk, pipeline
from jaxcap.model import encoders

# valid.npy first: deleted, it leaves no folder that looks complete.
_FILES = ("valid.npy", "features.npy", "stamps.npy", "keys.json", "encoder.json")
# Encoder settings that change how fast features are computed, not what they are.
_NOT_IN_KEY = ("batch_size", "weights")


def _crash_point(where: str) -> None:
  """A no-op; tests replace it to kill the process at a fixed point of a write."""
  del where


def file_digest(path: str | os.PathLike) -> str:
  """sha256 of a file's content, once per process while the file is unchanged."""
  st = os.stat(path)
  return _digest(os.path.realpath(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _digest(path: str, size: int, mtime_ns: int) -> str:
  del size, mtime_ns  # the cache key
  with open(path, "rb") as f:
    return hashlib.file_digest(f, "sha256").hexdigest()


def describe_encoder(encoder_config) -> dict:
  """What cached features depend on besides the image: every `encoder` setting except the
  batch size (the resize method, say, and any added later), with the image size resolved
  and the weights file named by its content hash."""
  description = {k: v for k, v in encoder_config.to_dict().items() if k not in _NOT_IN_KEY}
  description["image_size"] = encoders.image_size(encoder_config)
  weights = encoder_config.get("weights", "") or encoders.get(
      encoder_config.name).default_weights_path()
  description["weights_sha256"] = file_digest(weights)
  return description


def cache_folder(root: str, split: pipeline.Split, description: dict) -> str:
  """<root>/<encoder>_<size>px/<split>_<hash of the keys and the description>."""
  digest = hashlib.sha1("\n".join(split.keys).encode("utf-8"))
  digest.update(json.dumps(description, sort_keys=True).encode("utf-8"))
  return os.path.join(root, f"{description['name']}_{description['image_size']}px",
                      f"{split.name}_{digest.hexdigest()[:12]}")


def file_stamps(split: pipeline.Split, rows: range | None = None) -> np.ndarray:
  """(N, 2) int64 (size, mtime_ns) of each image's file (of `rows` only, when given; 0
  elsewhere); -1 for a missing file, 0 for images that are not files."""
  stamps = np.zeros((len(split), 2), np.int64)
  rows = range(len(split)) if rows is None else rows
  for i in rows if split.files else ():
    path = split.files[i]
    try:
      st = os.stat(path)
      stamps[i] = st.st_size, st.st_mtime_ns
    except OSError:
      stamps[i] = -1
  return stamps


def _new_npy(path: str, dtype, shape: tuple[int, ...]) -> None:
  """A zero-filled .npy file with its disk blocks reserved: a memory-mapped write to a full
  disk would otherwise kill the process with SIGBUS and no message."""
  size = np.dtype(dtype).itemsize * int(np.prod(shape))
  try:
    with disk.writing(path, f"the feature cache ({size / 1e9:.2f} GB; data.cache_dir "
                      "chooses where)"):
      np.lib.format.open_memmap(path, "w+", dtype, shape).flush()
      with open(path, "r+b") as f:
        try:
          os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
        except OSError as e:
          if e.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise  # else a file system that cannot reserve: written as it goes
  except disk.DiskFullError:
    if os.path.exists(path):
      os.remove(path)
    raise


def _create(folder: str, keys: list[str], description: dict, shape: tuple[int, ...]):
  """Lays out an empty cache folder; valid.npy comes last and says it is complete."""
  os.makedirs(folder, exist_ok=True)
  for name in _FILES:  # a damaged or partial folder: start over
    if os.path.exists(os.path.join(folder, name)):
      os.remove(os.path.join(folder, name))
  for name, value in (("keys.json", keys), ("encoder.json", description)):
    path = os.path.join(folder, name)
    with disk.writing(path, "the feature cache"), open(path, "w", encoding="utf-8") as f:
      json.dump(value, f)
  _new_npy(os.path.join(folder, "features.npy"), np.float16, shape)
  _new_npy(os.path.join(folder, "stamps.npy"), np.int64, (shape[0], 2))
  valid_path = os.path.join(folder, "valid.npy")
  tmp = valid_path + ".tmp.npy"
  _new_npy(tmp, np.uint8, (shape[0],))
  os.replace(tmp, valid_path)


def _open_npy(path: str) -> np.memmap:
  """A writable memory map of a .npy file, refusing a truncated one: numpy's "r+" mode
  would silently extend it with zeros, its "r" mode raises ValueError."""
  np.lib.format.open_memmap(path, "r")
  return np.lib.format.open_memmap(path, "r+")


def _open_existing(folder: str, keys: list[str], description: dict):
  """(features, stamps, valid) memory maps of a complete folder, or None after warning
  that it is damaged (it is then rebuilt)."""
  path = folder
  try:
    for name, expected in (("keys.json", keys), ("encoder.json", description)):
      path = os.path.join(folder, name)
      with open(path, encoding="utf-8") as f:
        if json.load(f) != json.loads(json.dumps(expected)):
          raise ValueError(f"holds other {name[:-5]} than this run's")
    maps = []
    for name in ("features.npy", "stamps.npy", "valid.npy"):
      path = os.path.join(folder, name)
      maps.append(_open_npy(path))
    features, stamps, valid = maps
    if (features.ndim != 3 or features.shape[0] != len(keys)
        or stamps.shape != (len(keys), 2) or valid.shape != (len(keys),)):
      path = folder
      raise ValueError(f"shapes {features.shape}, {stamps.shape}, {valid.shape} do not fit "
                       f"{len(keys)} images")
  except (OSError, ValueError) as e:  # truncated .npy: "mmap length is greater than ..."
    logging.warning("feature cache %s is unreadable (%s); rebuilding it (deleting %s does "
                    "the same)", path, e, folder)
    return None
  return features, stamps, valid


def _open(folder: str, keys: list[str], description: dict):
  """`_open_existing` of a folder that has its valid.npy, else None."""
  if os.path.exists(os.path.join(folder, "valid.npy")):
    return _open_existing(folder, keys, description)
  return None


def prepare(split: pipeline.Split, *, cache_root: str, description: dict,
            shape: tuple[int, ...]) -> None:
  """Lays out the split's cache folder for features of `shape` (P, D) per image unless a
  readable one is there: one process does it before others write their shards into it."""
  folder = cache_folder(cache_root, split, description)
  if _open(folder, split.keys, description) is None:
    _create(folder, split.keys, description, (len(split),) + tuple(shape))


def extract_features_cached(
    split: pipeline.Split,
    feature_fn: Callable[[np.ndarray], jax.Array],
    *,
    batch_size: int,
    cache_root: str,
    description: dict,
    rows: range | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """`pipeline.extract_features` through the cache: same contract, features on disk.

  description: what the features depend on besides the pixels (`describe_encoder`); it
    needs "name" and "image_size".
  rows: the images to read, encode and return (default all); other rows of the folder are
    left as they are (another process's shard).
  Returns the read-only (len(rows), P, D) float16 memory map of rows (those of unreadable
  images are zeros) and the indices of the readable images, counted from rows.start.
  """
  rows = range(len(split)) if rows is None else rows
  folder = cache_folder(cache_root, split, description)
  now = file_stamps(split, rows)  # before any image is read: a later change shows next run
  features = stamps = valid = None
  opened = _open(folder, split.keys, description)
  if opened is not None:
    features, stamps, valid = opened
    mine = slice(rows.start, rows.stop)
    changed = rows.start + np.flatnonzero(
        (valid[mine] != 0) & (stamps[mine] != now[mine]).any(axis=1))
    if len(changed):
      valid[changed] = 0  # unmarked before the rows are overwritten
      valid.flush()
  done = (np.zeros(len(rows), bool) if valid is None
          else np.asarray(valid[rows.start:rows.stop]) != 0)
  todo = (rows.start + np.flatnonzero(~done)).tolist()
  kept = (rows.start + np.flatnonzero(done)).tolist()
  skipped: list[str] = []
  with tqdm.tqdm(total=len(rows), initial=len(rows) - len(todo), unit="img",
                 desc=f"caching {split.name} features", disable=len(todo) < 256) as bar:
    for batch, feats in pipeline.feature_batches(split, todo, feature_fn, batch_size, skipped,
                                                bar):
      if features is None:
        _create(folder, split.keys, description, (len(split),) + feats.shape[1:])
        features, stamps, valid = _open_existing(folder, split.keys, description)
      if features.shape[1:] != feats.shape[1:]:
        raise ValueError(f"{folder}: cached features are {features.shape[1:]} per image, the "
                         f"encoder gives {feats.shape[1:]}; delete the folder to rebuild it")
      features[batch] = feats.astype(np.float16)
      stamps[batch] = now[batch]
      features.flush()  # data first ...
      stamps.flush()
      _crash_point("before valid flush")
      valid[batch] = 1
      valid.flush()  # ... then the marks
      kept.extend(batch)
  pipeline.report_skipped(split.name, skipped)
  if features is None:
    raise ValueError(f"no readable images in the {split.name} split")
  del stamps, valid
  features = np.lib.format.open_memmap(os.path.join(folder, "features.npy"), "r")
  return features[rows.start:rows.stop], np.asarray(sorted(kept), np.int64) - rows.start
