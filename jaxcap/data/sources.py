"""Where captioned images come from: one function per source, each returning `Split`s.

A source maps a data config and the encoder's image size to {"train", "val", "test"} splits
(see `pipeline.Split`); register it in `SOURCES`.
"""

from __future__ import annotations

from jaxcap import images as image_io
from jaxcap.data import shapes
from jaxcap.data.pipeline import Split


def shapes_splits(data_config, image_size: int) -> dict[str, Split]:
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
        load=lambda j, first=start: image_io.resize(shapes.make_example(seed, first + j)[0],
                                                    image_size),
    )
    start += count
  return out


SOURCES = {"shapes": shapes_splits}


def splits(data_config, image_size: int) -> dict[str, Split]:
  """The train / val / test splits of `data_config.source` at `image_size`."""
  if data_config.source not in SOURCES:
    raise ValueError(f"unknown data source {data_config.source!r}; choose one of "
                     f"{', '.join(SOURCES)}")
  return SOURCES[data_config.source](data_config, image_size)
