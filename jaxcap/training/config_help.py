"""`train.py --help`: every field of a config with its default and allowed range.

The ranges are the start-up checks' own (`config_checks.CHECKS`), so the help cannot drift
from what a run accepts.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

import ml_collections

from jaxcap.training import config_checks


WIDTH = 44  # the column of the allowed ranges


def fields(config: Mapping, prefix: str = "") -> Iterator[tuple[str, Any]]:
  """(dotted name, value) of every leaf field of a (nested) config, in its order."""
  for key, value in config.items():
    if isinstance(value, (Mapping, ml_collections.ConfigDict)):
      yield from fields(value, f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}", value


def describe(config: Mapping, source: str) -> str:
  """One line per field: `--config.NAME=DEFAULT  allowed range` (blank where unchecked)."""
  allowed = {check.field: check.allowed for check in config_checks.CHECKS}
  lines = []
  for name, value in fields(config):
    flag = f"--config.{name}={value!r}"
    what = allowed.get(name, "")
    # The range beside its field, or on the next line where the field is long.
    lines.append(f"{flag:<{WIDTH}}{what}" if len(flag) < WIDTH else
                 f"{flag}\n    {'':<{WIDTH}}{what}")
  return (f"config fields (defaults from {source}; override any with --config.FIELD=VALUE):"
          "\n" + "\n".join(f"    {line}".rstrip() for line in lines))
