"""Your own data as JSON Lines: one image per line (or several lines per image).

    {"image": "photos/dog.jpg", "caption": "a dog on a beach"}
    {"image": "/data/cat.png", "captions": ["a cat", "a sleeping cat"], "split": "val"}

Relative paths resolve against the file's folder. Lines naming the same image merge their
captions. Without a "split" field, an image goes to val or test by a stable hash of its path
(`data.val_fraction`, `data.test_fraction`), so the split never changes between runs.
"""

from __future__ import annotations

import hashlib
import json
import os

SPLITS = ("train", "val", "test")


def hashed_split(key: str, val_fraction: float, test_fraction: float) -> str:
  """A stable split for an image key: the same key always lands in the same split."""
  u = int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:8], 16) / 0x100000000
  if u < val_fraction:
    return "val"
  if u < val_fraction + test_fraction:
    return "test"
  return "train"


def read(path: str, val_fraction: float = 0.05, test_fraction: float = 0.05
         ) -> dict[str, list[tuple[str, list[str]]]]:
  """{split: [(absolute image path, [captions])]} from a JSON Lines file."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"JSON Lines data file not found: {path}")
  root = os.path.dirname(os.path.abspath(path))
  images: dict[str, list[str]] = {}
  split_of: dict[str, str] = {}
  with open(path, "rb") as f:  # bytes: a bad byte is reported with its line
    for number, raw in enumerate(f, 1):
      where = f"{path}, line {number}"
      try:
        line = raw.decode("utf-8")
      except UnicodeDecodeError as e:
        raise ValueError(f"{where}: not UTF-8 (byte 0x{raw[e.start]:02x} at column "
                         f"{e.start + 1}); save the file as UTF-8") from None
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not valid JSON ({e.msg})") from None
      if not isinstance(record, dict) or not isinstance(record.get("image"), str):
        raise ValueError(f"{where}: needs an \"image\" path string")
      captions = record.get("captions", [record["caption"]] if "caption" in record else None)
      if (not isinstance(captions, list) or not captions
          or not all(isinstance(c, str) and c.strip() for c in captions)):
        raise ValueError(f"{where}: needs \"caption\" (a string) or \"captions\" (a list of "
                         "non-empty strings)")
      image = os.path.normpath(os.path.join(root, record["image"]))
      split = record.get("split")
      if split is not None and split not in SPLITS:
        raise ValueError(f"{where}: split must be one of {', '.join(SPLITS)}, not {split!r}")
      if split is None:
        split = hashed_split(os.path.relpath(image, root), val_fraction, test_fraction)
      if split_of.setdefault(image, split) != split:
        raise ValueError(f"{where}: {record['image']} is already in the {split_of[image]} split")
      images.setdefault(image, []).extend(captions)
  if not images:
    raise ValueError(f"{path}: no examples")
  out = {name: [] for name in SPLITS}
  for image, captions in images.items():
    out[split_of[image]].append((image, captions))
  return out
