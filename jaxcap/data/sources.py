"""Where captioned images come from: one function per source, each returning `Split`s.

A source maps a data config, the encoder's image size and resize method
(`jaxcap.data.image_files.RESIZE_METHODS`) to {"train", "val", "test"} splits (see `pipeline.Split`);
register it in `SOURCES`.
"""

from __future__ import annotations

from jaxcap.data import USE_RESTVAL, coco_json, image_files, jsonl, karpathy, shapes, tfds_coco
from jaxcap.data.pipeline import Split


def shapes_splits(data_config, image_size: int, resize: str) -> dict[str, Split]:
  """The built-in synthetic shapes: disjoint index ranges of one generator seed."""
  seed = data_config.seed
  counts = {"train": data_config.num_train, "val": data_config.num_val,
            "test": data_config.num_test}
  out, start = {}, 0
  for name, count in counts.items():
    indices = range(start, start + count)
    out[name] = Split(
        name=name,
        keys=[f"shapes/{seed}/{i}" for i in indices],
        captions=[[shapes.caption_of(seed, i)] for i in indices],
        load=lambda j, first=start: image_files.resize(shapes.make_example(seed, first + j)[0],
                                                    image_size, resize),
    )
    start += count
  return out


def file_splits(items: dict[str, list[tuple[str, list[str]]]], image_size: int, resize: str
                ) -> dict[str, Split]:
  """Splits of image files: {split: [(path, [captions])]} -> {split: Split}."""

  def make(name, rows):
    paths = [path for path, _ in rows]
    return Split(name=name, keys=paths, captions=[caps for _, caps in rows],
                 load=lambda i: image_files.load_image(paths[i], image_size, resize),
                 files=paths)

  return {name: make(name, rows) for name, rows in items.items()}


def jsonl_splits(data_config, image_size: int, resize: str) -> dict[str, Split]:
  """A JSON Lines file of {"image", "caption"/"captions", "split"?} (`data.path`)."""
  return file_splits(jsonl.read(data_config.path, data_config.get("val_fraction", 0.05),
                                data_config.get("test_fraction", 0.05)), image_size, resize)


def karpathy_splits(data_config, image_size: int, resize: str) -> dict[str, Split]:
  """Karpathy's dataset_*.json (`data.path`) with images under `data.image_root`."""
  return file_splits(karpathy.read(data_config.path, data_config.image_root,
                                   data_config.get("use_restval", USE_RESTVAL)),
                     image_size, resize)


def coco_json_splits(data_config, image_size: int, resize: str) -> dict[str, Split]:
  """COCO caption annotation files and image folders per split; test defaults to val."""
  items = {
      "train": coco_json.read(data_config.train_annotations, data_config.train_images),
      "val": coco_json.read(data_config.val_annotations, data_config.val_images),
  }
  test_annotations = data_config.get("test_annotations", "")
  items["test"] = (coco_json.read(test_annotations, data_config.test_images)
                   if test_annotations else items["val"])
  return file_splits(items, image_size, resize)


SOURCES = {"shapes": shapes_splits, "jsonl": jsonl_splits, "karpathy": karpathy_splits,
           "coco_json": coco_json_splits, "tfds_coco": tfds_coco.splits}


def splits(data_config, image_size: int, resize: str) -> dict[str, Split]:
  """The train / val / test splits of `data_config.source` at `image_size`, resized by
  `resize` (`jaxcap.data.image_files.RESIZE_METHODS`)."""
  if data_config.source not in SOURCES:
    raise ValueError(f"unknown data source {data_config.source!r}; choose one of "
                     f"{', '.join(SOURCES)}")
  image_files.check_resize_method(resize)
  return SOURCES[data_config.source](data_config, image_size, resize)
