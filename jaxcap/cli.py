"""The `jaxcap` command (`main`: train, sample, evaluate, serve, export; each is a module of
`jaxcap.commands`), and what the tools share: the compile cache, the --checkpoint flag and
model loading.

Importing this module is cheap (no JAX), so a tool can use `CACHE_DIR` as a flag default
and still answer --help at once.
"""

from __future__ import annotations

import argparse
import os
import sys

DEFAULT_WORKDIR = os.path.join("workdirs", "quickstart")  # where `make demo` trains
COMMANDS = {
    "train": "train (or resume) a captioner in a workdir",
    "sample": "caption image files and folders with a trained model",
    "evaluate": "score a split (or a COCO results file) with BLEU, METEOR, ROUGE-L, CIDEr",
    "serve": "serve a model over HTTP, with a page to drop images on",
    "export": "write a workdir's model to one file that Captioner.load and --model read",
}
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


def add_model_flags(parser: argparse.ArgumentParser) -> None:
  """--model FILE (an exported model, instead of --workdir) and --checkpoint."""
  parser.add_argument("--model", metavar="FILE", type=_model_file, default=None,
                      help="an exported model file (`jaxcap export`) instead of --workdir")
  add_checkpoint_flag(parser)


def _model_file(path: str) -> str:
  if not os.path.isfile(path):
    raise argparse.ArgumentTypeError(f"{path}: no such file (write one with `jaxcap export "
                                     "WORKDIR FILE`)")
  return path


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


def load_captioner(path: str, cache_dir: str, checkpoint: str | int | None = None):
  """The `Captioner` of a workdir or an exported model file (`checkpoint`: see
  `captioner.restore_params`), with the compile cache on; None (after one `error:` line on
  stderr) when there is no usable model there. Says the model card's summary on stderr."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.ERROR)  # orbax's notes would drown the output
  enable_cache(cache_dir)
  from jaxcap.captioner import Captioner  # pylint: disable=g-import-not-at-top
  try:
    captioner = Captioner.load(path, "auto" if checkpoint is None else checkpoint)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return None
  if captioner.summary:
    print(f"model: {captioner.summary}", file=sys.stderr)
  return captioner


def main(argv=None) -> int:
  """`jaxcap COMMAND ARGS`: runs `jaxcap.commands.COMMAND.main(ARGS)`."""
  argv = sys.argv[1:] if argv is None else list(argv)
  usage = "usage: jaxcap {" + ",".join(COMMANDS) + "} [--help] ..."
  if not argv or argv[0] in ("-h", "--help"):
    print(f"{usage}\n\nImage captioning in JAX/Flax.\n\ncommands:")
    for name, what in COMMANDS.items():
      print(f"  {name:<9} {what}")
    print("\n`jaxcap COMMAND --help` lists a command's options.")
    return 0 if argv else 2
  if argv[0] not in COMMANDS:
    print(f"{usage}\njaxcap: error: unknown command {argv[0]!r}; choose one of "
          f"{', '.join(COMMANDS)}", file=sys.stderr)
    return 2
  import importlib  # pylint: disable=g-import-not-at-top
  sys.argv[0] = f"jaxcap {argv[0]}"  # what the command's --help and errors call it
  return importlib.import_module(f"jaxcap.commands.{argv[0]}").main(argv[1:]) or 0
