"""Captioned-image data.

    sources.py      a config's splits from any source (shapes, jsonl, karpathy, coco_json,
                    tfds_coco; one module each)
    image_files.py  reading image files (modes, EXIF, size limits) and the resize methods
    text.py         caption cleaning and the Vocabulary
    pipeline.py     splits -> feature batches and caption sets
    cache.py        the on-disk feature cache, keyed by what produced it
    build.py        a config's splits as features, through the cache
    disk.py         atomic writes and free-space checks
"""

import json
import os

# Whether Karpathy's "restval" images (30,504 for COCO) join train, when `data.use_restval` is
# not set: no, as in the seed, which trains on TFDS coco_captions' `train` split only. Both
# sources that have restval (karpathy, tfds_coco) read this one default.
USE_RESTVAL = False


def read_json(path: str | os.PathLike, what: str):
  """A JSON file's content. A missing file raises FileNotFoundError, an unreadable or malformed
  one ValueError, naming it."""
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except FileNotFoundError:
    raise FileNotFoundError(f"{what} file not found: {path}") from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{path}: not valid JSON ({e})") from None
  except OSError as e:  # a directory, no permission, ...
    raise ValueError(f"{path}: cannot read {what} file ({e.strerror or e})") from None
