"""TFDS `coco_captions`: the seed's own source (COCO 2014 with Karpathy's splits).

Needs TensorFlow and tensorflow-datasets (`pip install -e '.[tfds]'`), and the prepared data
set (`tfds build coco_captions`, about 27 GB downloaded; `data.tfds_data_dir` points at it).
Each example has `image` (uint8), `image/id` and `captions/text`. TFDS splits: train, val,
test, restval; restval joins train when `data.use_restval`.
"""

from __future__ import annotations

import numpy as np

from jaxcap.data import USE_RESTVAL, image_files
from jaxcap.data.pipeline import Split


def _tfds():
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ImportError(
        "the tfds_coco source needs TensorFlow and tensorflow-datasets: "
        "pip install -e '.[tfds]'") from None
  return tfds


def _dataset(tfds_split: str, data_dir, skip_images: bool):
  tfds = _tfds()
  decoders = {"image": tfds.decode.SkipDecoding()} if skip_images else None
  return tfds.as_numpy(tfds.load("coco_captions", split=tfds_split, data_dir=data_dir,
                                 shuffle_files=False, decoders=decoders))


class _Sequential:
  """Image i of a TFDS split, read by streaming: the encoders ask for 0, 1, 2, ... in
  order (the cache skips some), so nothing but the current image is held in memory."""

  def __init__(self, tfds_split: str, data_dir):
    self._split, self._data_dir = tfds_split, data_dir
    self._iterator, self._position = None, 0

  def __call__(self, index: int) -> np.ndarray:
    if self._iterator is None or index < self._position:
      self._iterator, self._position = iter(_dataset(self._split, self._data_dir, False)), 0
    while self._position <= index:
      example = next(self._iterator)
      self._position += 1
    return example["image"]


def read_split(tfds_split: str, data_dir=None) -> tuple[list[str], list[list[str]]]:
  """(keys "coco/<id>", captions) of one TFDS split, without decoding any image."""
  keys, captions = [], []
  for example in _dataset(tfds_split, data_dir, skip_images=True):
    keys.append(f"coco/{int(example['image/id'])}")
    captions.append([t.decode("utf-8") if isinstance(t, bytes) else str(t)
                     for t in example["captions"]["text"]])
  return keys, captions


def splits(data_config, image_size: int, resize: str) -> dict[str, Split]:
  """train (+ restval), val and test of TFDS coco_captions at `image_size`, resized by
  `resize` (`jaxcap.data.image_files.RESIZE_METHODS`)."""
  data_dir = data_config.get("tfds_data_dir", "") or None
  restval = ["restval"] if data_config.get("use_restval", USE_RESTVAL) else []
  wanted = {"train": ["train"] + restval, "val": ["val"], "test": ["test"]}
  out = {}
  for name, tfds_splits in wanted.items():
    keys, captions, readers = [], [], []
    for tfds_split in tfds_splits:
      k, c = read_split(tfds_split, data_dir)
      keys += k
      captions += c
      readers.append((len(keys) - len(k), _Sequential(tfds_split, data_dir)))

    def load(i, readers=readers):
      start, reader = max((r for r in readers if r[0] <= i), key=lambda r: r[0])
      return image_files.resize(reader(i - start), image_size, resize)

    out[name] = Split(name, keys, captions, load)
  return out
