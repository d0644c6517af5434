"""Where captioned images come from: one function per source, all yielding the same thing.

A source gives, per split, a count and an iterator of (image (S, S, 3) float32 in [0, 1],
[caption, ...]) pairs at the encoder's image size `S`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterator

import numpy as np

from jaxcap import images as image_io
from jaxcap.data import shapes

Example = tuple[np.ndarray, list[str]]


@dataclasses.dataclass
class Split:
  name: str
  count: int
  examples: Callable[[], Iterator[Example]]


def _shapes_examples(seed: int, start: int, count: int, size: int) -> Iterator[Example]:
  for index in range(start, start + count):
    image, caption = shapes.make_example(seed, index)
    yield image_io.resize(image, size), [caption]


def shapes_splits(data_config, image_size: int) -> dict[str, Split]:
  """The built-in synthetic shapes: disjoint index ranges of one generator seed."""
  counts = {"train": data_config.num_train, "val": data_config.num_val,
            "test": data_config.num_test}
  out, start = {}, 0
  for name, count in counts.items():
    out[name] = Split(name, count, lambda s=start, c=count: _shapes_examples(
        data_config.seed, s, c, image_size))
    start += count
  return out


SOURCES = {"shapes": shapes_splits}


def splits(data_config, image_size: int) -> dict[str, Split]:
  """The train / val / test splits of `data_config.source` at `image_size`."""
  if data_config.source not in SOURCES:
    raise ValueError(f"unknown data source {data_config.source!r}; choose one of "
                     f"{', '.join(SOURCES)}")
  return SOURCES[data_config.source](data_config, image_size)
