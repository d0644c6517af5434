"""COCO caption annotations (`captions_train2017.json` style) plus an image folder.

    {"images": [{"id": 1, "file_name": "000000000001.jpg"}, ...],
     "annotations": [{"image_id": 1, "caption": "..."}, ...]}
"""

from __future__ import annotations

import os

from jaxcap.data import read_json


def read(annotations: str, image_folder: str) -> list[tuple[str, list[str]]]:
  """[(image path, [captions])] for every image that has at least one caption."""
  data = read_json(annotations, "COCO annotations")
  try:
    files = {image["id"]: image["file_name"] for image in data["images"]}
    captions: dict = {}
    for ann in data["annotations"]:
      captions.setdefault(ann["image_id"], []).append(ann["caption"])
  except (KeyError, TypeError):
    raise ValueError(f"{annotations}: not COCO caption annotations (needs images with id and "
                     "file_name, annotations with image_id and caption)") from None
  unknown = set(captions) - set(files)
  if unknown:
    raise ValueError(f"{annotations}: captions for unknown image ids {sorted(unknown)[:5]}")
  return [(os.path.join(image_folder, files[i]), caps) for i, caps in captions.items()]
