"""COCO caption files: annotations (`captions_train2017.json` style) and results.

    annotations: {"images": [{"id": 1, "file_name": "000000000001.jpg"}, ...],
                  "annotations": [{"image_id": 1, "caption": "..."}, ...]}
    results:     [{"image_id": 1, "caption": "..."}, ...]

`read` makes a training source of annotations plus an image folder; `read_captions` and
`read_results` are what `evaluate.py` scores. Malformed files raise ValueError naming the file.
"""

from __future__ import annotations

import os
from typing import Hashable

from jaxcap.data import read_json


def _image_id(value, path, where):
  if isinstance(value, bool) or not isinstance(value, (int, str)):
    raise ValueError(f"{path}: {where} has image_id {value!r}; expected an integer or a string")
  return value


def _captions(data, path) -> dict[Hashable, list[str]]:
  """The "annotations" of parsed COCO caption annotations -> {image_id: [caption, ...]}."""
  if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
    raise ValueError(f"{path}: not COCO caption annotations (expected an object with an "
                     "'annotations' list)")
  out: dict[Hashable, list[str]] = {}
  for i, ann in enumerate(data["annotations"]):
    if not isinstance(ann, dict) or "image_id" not in ann or "caption" not in ann:
      raise ValueError(f"{path}: annotation {i} lacks an 'image_id' or a 'caption'")
    if not isinstance(ann["caption"], str):
      raise ValueError(f"{path}: annotation {i} has a caption that is not a string")
    out.setdefault(_image_id(ann["image_id"], path, f"annotation {i}"), []).append(
        ann["caption"])
  if not out:
    raise ValueError(f"{path}: no annotations")
  return out


def read_captions(path: str | os.PathLike) -> dict[Hashable, list[str]]:
  """COCO caption annotations -> {image_id: [caption, ...]}, in file order.

  Only "annotations" is read ("images" may be absent).
  """
  return _captions(read_json(path, "annotations"), path)


def read(annotations: str, image_folder: str) -> list[tuple[str, list[str]]]:
  """[(image path, [captions])] for every image that has at least one caption."""
  data = read_json(annotations, "annotations")
  captions = _captions(data, annotations)
  try:
    files = {image["id"]: image["file_name"] for image in data["images"]}
  except (KeyError, TypeError):
    raise ValueError(f"{annotations}: not COCO caption annotations for training (needs "
                     "'images' with 'id' and 'file_name')") from None
  unknown = set(captions) - set(files)
  if unknown:
    raise ValueError(f"{annotations}: captions for unknown image ids {sorted(unknown)[:5]}")
  return [(os.path.join(image_folder, files[i]), caps) for i, caps in captions.items()]


def read_results(path: str | os.PathLike) -> dict[Hashable, str]:
  """COCO caption results ([{"image_id", "caption"}, ...]) -> {image_id: caption}.

  An image_id listed twice is an error: pycocotools' loadRes would keep both captions, and the
  scorers then fail on an image with two candidates.
  """
  data = read_json(path, "results")
  if not isinstance(data, list):
    raise ValueError(f"{path}: not COCO caption results (expected a JSON list of "
                     "{\"image_id\", \"caption\"} objects)")
  if not data:
    raise ValueError(f"{path}: no results")
  out: dict[Hashable, str] = {}
  for i, row in enumerate(data):
    if not isinstance(row, dict) or "image_id" not in row or "caption" not in row:
      raise ValueError(f"{path}: result {i} lacks an 'image_id' or a 'caption'")
    if not isinstance(row["caption"], str):
      raise ValueError(f"{path}: result {i} has a caption that is not a string")
    image_id = _image_id(row["image_id"], path, f"result {i}")
    if image_id in out:
      raise ValueError(f"{path}: image_id {image_id!r} has more than one result "
                       f"(result {i}); give one caption per image")
    out[image_id] = row["caption"]
  return out
