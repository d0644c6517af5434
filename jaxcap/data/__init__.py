"""Captioned-image data: sources, the batching pipeline, the feature cache."""

import json
import os


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
