"""Captions images with a trained model: `python sample.py --image a.jpg [b.png ...]`.

Prints one line per image, `path<TAB>caption` (or JSON Lines with --json). An image that
cannot be read gets one error line on stderr; the others are still captioned, and the exit
status is then 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from jaxcap import cli  # no JAX: --help stays instant
from jaxcap.decoding import options as decode_options

DEFAULT_WORKDIR = os.path.join("workdirs", "quickstart")  # where `make demo` trains


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  p.add_argument("--image", nargs="+", required=True, metavar="PATH",
                 help="image files (any format Pillow reads)")
  p.add_argument("--workdir", default=DEFAULT_WORKDIR, help="training workdir to load")
  cli.add_checkpoint_flag(p)
  p.add_argument("--batch_size", type=int, default=32, help="images per compiled call")
  p.add_argument("--attention", metavar="PNG_OR_DIR", default=None,
                 help="draw each word's attention over the image: a .png path for one "
                      "image, or a folder (one <image name>.png per image)")
  p.add_argument("--cache_dir", default=cli.CACHE_DIR, help=cli.CACHE_HELP)
  p.add_argument("--json", action="store_true",
                 help='print {"image": path, "caption": text} per line')
  decode_options.add_flags(p)
  args = p.parse_args(argv)
  if args.attention and args.attention.lower().endswith(".png") and len(args.image) > 1:
    p.error("--attention: give a folder, not a .png file, when captioning several images")
  try:  # the options' own checks before any model loads (again later over the config's)
    decode_options.options_from_flags(args, decode_options.DecodeOptions())
  except ValueError as e:
    p.error(str(e))
  if args.batch_size < 1:
    p.error("--batch_size must be >= 1")
  return args


def _figure_path(target: str, image_path: str, count: int) -> str:
  if target.lower().endswith(".png") and count == 1:
    return target
  os.makedirs(target, exist_ok=True)
  return os.path.join(target, os.path.splitext(os.path.basename(image_path))[0] + ".png")


def main(argv=None) -> int:
  args = parse_args(argv)
  captioner = cli.load_captioner(args.workdir, args.cache_dir, args.checkpoint)
  if captioner is None:
    return 1
  try:
    options = decode_options.options_from_flags(args, captioner.options)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  # Heavy imports after argument parsing, so --help is instant.
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from jaxcap import decoding
  from jaxcap.data import image_files
  from jaxcap.evaluation import figures

  # pylint: disable-next=g-import-not-at-top
  from jaxcap.model import decoders
  print(f"decoding: {options.describe()}", file=sys.stderr)

  failed = False
  loaded: list[tuple[str, np.ndarray]] = []
  for path in args.image:
    try:
      loaded.append((path, captioner.load_image(path)))
    except image_files.ImageError as e:
      print(f"error: {e}", file=sys.stderr)
      failed = True

  key = jax.random.key(options.seed)
  for start in range(0, len(loaded), args.batch_size):
    chunk = loaded[start:start + args.batch_size]
    batch = decoding.pad_rows(np.stack([image for _, image in chunk]),
                              decoding.batch_size_bucket(len(chunk), args.batch_size))
    captions, words, attention = captioner.caption(batch, jax.random.fold_in(key, start),
                                                   options)
    for i, ((path, image), caption) in enumerate(zip(chunk, captions)):
      if args.attention:
        figures.save_attention_figure(
            _figure_path(args.attention, path, len(loaded)), image, words[i], attention[i],
            title=f"{caption}   ({decoders.attention_description(captioner.spec)})")
      if args.json:
        print(json.dumps({"image": path, "caption": caption}), flush=True)
      else:
        print(f"{path}\t{caption}", flush=True)
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
