"""Karpathy-split JSON (`dataset_coco.json`, `dataset_flickr8k.json`, `dataset_flickr30k.json`)
plus an image root: the format most captioning work uses.

Each entry of "images" has "filename" (and for COCO "filepath", e.g. "val2014"), "split"
("train", "val", "test" or "restval") and "sentences" with each caption's "raw" text.
"restval" joins train when `use_restval` (common practice, but off by default as in the seed:
Karpathy's COCO split has 82,783 train + 30,504 restval images).
"""

from __future__ import annotations

import os

from jaxcap.data import read_json


def read(path: str, image_root: str, use_restval: bool
         ) -> dict[str, list[tuple[str, list[str]]]]:
  """{split: [(image path, [captions])]} from a Karpathy split file."""
  data = read_json(path, "Karpathy split")
  if not isinstance(data, dict) or not isinstance(data.get("images"), list):
    raise ValueError(f"{path}: not a Karpathy split file (no 'images' list)")
  out = {"train": [], "val": [], "test": []}
  for i, entry in enumerate(data["images"]):
    try:
      split = entry["split"]
      captions = [s["raw"] for s in entry["sentences"]]
      image = os.path.join(image_root, entry.get("filepath", ""), entry["filename"])
    except (KeyError, TypeError):
      raise ValueError(f"{path}: image entry {i} lacks split, filename or sentences") from None
    if split == "restval":
      if not use_restval:
        continue
      split = "train"
    if split in out and captions:
      out[split].append((image, captions))
  return out
