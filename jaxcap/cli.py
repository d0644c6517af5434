"""What the command lines share (sample.py, serve.py, evaluate.py): the compile cache, the
--checkpoint flag and model loading.

Importing this module is cheap (no JAX), so a tool can use `CACHE_DIR` as a flag default
and still answer --help at once.
"""

from __future__ import annotations

import argparse
import os
import sys

CACHE_DIR = os.environ.get("JAXCAP_CACHE_DIR",
                           os.path.join(os.path.expanduser("~"), ".cache", "jaxcap"))
CACHE_HELP = ("JAX's persistent compilation cache (also $JAXCAP_CACHE_DIR); a second run with "
              "the same shapes skips compiling. '' turns it off")


def enable_cache(cache_dir: str) -> None:
  """Keeps every compiled program under `cache_dir`/xla ('' leaves the cache off)."""
  if not cache_dir:
    return
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_compilation_cache_dir", os.path.join(cache_dir, "xla"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def add_checkpoint_flag(parser: argparse.ArgumentParser) -> None:
  """--checkpoint auto|best|latest|STEP; auto (None) is best when there is one, else latest."""
  parser.add_argument(
      "--checkpoint", type=_checkpoint_choice, default="auto", metavar="auto|best|latest|STEP",
      help="which checkpoint to load: best (by validation CIDEr), latest, a step number, or "
           "auto: best when <workdir>/best has one, else latest")


def _checkpoint_choice(text: str) -> str | int | None:
  if text in ("best", "latest"):
    return text
  if text == "auto":
    return None
  if text.isdigit():
    return int(text)
  raise argparse.ArgumentTypeError(f"{text!r}: use auto, best, latest or a step number")


def load_captioner(workdir: str, cache_dir: str, checkpoint: str | int | None = None):
  """The workdir's `Captioner` (from `checkpoint`: see inference.restore_params), with orbax
  quiet and the compile cache on; None (after one `error:` line on stderr) when there is no
  usable model there."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.ERROR)  # orbax's notes would drown the output
  enable_cache(cache_dir)
  from jaxcap.captioner import Captioner  # pylint: disable=g-import-not-at-top
  try:
    return Captioner(workdir, checkpoint)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return None
