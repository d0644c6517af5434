"""Allowed values, each as (what a value must be, in words; a test of the value).

The words complete "must be ...". Shared by `config_checks` (a config's fields) and
`decode_options.DecodeOptions` (its own fields), so a range is written once; imports no JAX.
"""

from __future__ import annotations

import math
from typing import Any, Callable

Range = tuple[str, Callable[[Any], bool]]


def is_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def integer(low: int, high: int | None = None) -> Range:
  allowed = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"
  return allowed, lambda v: is_int(v) and v >= low and (high is None or v <= high)


def number(low: float, high: float | None = None, *, low_open=False, high_open=False) -> Range:
  """A finite real in the interval; `*_open` excludes that end."""
  left = f"> {low}" if low_open else f">= {low}"
  right = "" if high is None else f" and {'<' if high_open else '<='} {high}"
  def ok(v):
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
      return False
    above = v > low if low_open else v >= low
    below = high is None or (v < high if high_open else v <= high)
    return above and below
  return f"a number {left}{right}", ok


def one_of(*options) -> Range:
  return "one of " + ", ".join(repr(o) for o in options), lambda v: v in options


BOOL: Range = ("True or False", lambda v: isinstance(v, bool))
STRING: Range = ("a string", lambda v: isinstance(v, str))
INT: Range = ("an integer", is_int)
