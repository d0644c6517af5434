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

from jaxcap import cli

DEFAULT_WORKDIR = os.path.join("workdirs", "quickstart")  # where `make demo` trains


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  p.add_argument("--image", nargs="+", required=True, metavar="PATH",
                 help="image files (any format Pillow reads)")
  p.add_argument("--workdir", default=DEFAULT_WORKDIR, help="training workdir to load")
  p.add_argument("--greedy", action="store_true",
                 help="pick the most likely word each step instead of sampling")
  p.add_argument("--top_k", type=int, default=None,
                 help="sample among the k most likely words (default: the config's, 10)")
  p.add_argument("--temperature", type=float, default=None,
                 help="divide logits by this before sampling (default: the config's, 1.0)")
  p.add_argument("--seed", type=int, default=0, help="sampling seed")
  p.add_argument("--batch_size", type=int, default=32, help="images per compiled call")
  p.add_argument("--attention", metavar="PNG_OR_DIR", default=None,
                 help="draw each word's attention over the image: a .png path for one "
                      "image, or a folder (one <image name>.png per image)")
  p.add_argument("--cache_dir", default=cli.CACHE_DIR, help=cli.CACHE_HELP)
  p.add_argument("--json", action="store_true",
                 help='print {"image": path, "caption": text} per line')
  args = p.parse_args(argv)
  if args.attention and args.attention.lower().endswith(".png") and len(args.image) > 1:
    p.error("--attention: give a folder, not a .png file, when captioning several images")
  if args.temperature is not None and args.temperature <= 0:
    p.error("--temperature must be > 0")
  if args.batch_size < 1:
    p.error("--batch_size must be >= 1")
  return args


def _bucket(n: int, cap: int) -> int:
  """Batch sizes are rounded up to powers of two so few shapes get compiled."""
  size = 1
  while size < n:
    size *= 2
  return min(size, cap)


def _figure_path(target: str, image_path: str, count: int) -> str:
  if target.lower().endswith(".png") and count == 1:
    return target
  os.makedirs(target, exist_ok=True)
  return os.path.join(target, os.path.splitext(os.path.basename(image_path))[0] + ".png")


def main(argv=None) -> int:
  args = parse_args(argv)
  captioner = cli.load_captioner(args.workdir, args.cache_dir)
  if captioner is None:
    return 1
  # Heavy imports after argument parsing, so --help is instant.
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jaxcap import images as image_io, viz  # pylint: disable=g-import-not-at-top

  failed = False
  loaded: list[tuple[str, np.ndarray]] = []
  for path in args.image:
    try:
      loaded.append((path, image_io.load_image(path, captioner.image_size)))
    except image_io.ImageError as e:
      print(f"error: {e}", file=sys.stderr)
      failed = True

  key = jax.random.key(args.seed)
  for start in range(0, len(loaded), args.batch_size):
    chunk = loaded[start:start + args.batch_size]
    batch = np.stack([image for _, image in chunk])
    size = _bucket(len(chunk), args.batch_size)
    batch = np.concatenate([batch, np.repeat(batch[-1:], size - len(chunk), axis=0)])
    captions, words, attention = captioner.caption(
        batch, jax.random.fold_in(key, start), greedy=args.greedy or None, top_k=args.top_k,
        temperature=args.temperature)
    for i, ((path, image), caption) in enumerate(zip(chunk, captions)):
      if args.attention:
        viz.save_attention_figure(_figure_path(args.attention, path, len(loaded)), image,
                                  words[i], attention[i], title=caption)
      if args.json:
        print(json.dumps({"image": path, "caption": caption}), flush=True)
      else:
        print(f"{path}\t{caption}", flush=True)
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
