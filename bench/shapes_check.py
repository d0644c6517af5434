"""Held-out check on shapes drawn by an independent renderer: exact-match rate of a workdir.

    python bench/shapes_check.py --workdir workdirs/quickstart [--count 100] [--greedy]
        [--beam_size 3] [--checkpoint best|latest|STEP]

The renderer here shares no code with `jaxcap.data.shapes`: it follows the grammar written
in that module's docstring (1-2 non-overlapping filled circles, squares or upward triangles,
red/green/blue/yellow, 15-35% of the side; "left of" when the centres are further apart
horizontally than vertically, else "above") but draws with pure colours, no anti-aliasing,
a white background and 300-px images, with scenes whose relation is clear (the horizontal
and vertical distances differ by at least 10% of the side). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxcap import cli  # pylint: disable=wrong-import-position
from jaxcap.decoding import options as decode_options

SIDE = 300
COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255),
           "yellow": (255, 255, 0)}
KINDS = ("circle", "square", "triangle")


def draw_scene(rng: np.random.Generator) -> tuple[Image.Image, str]:
  """One image and its caption."""
  count = int(rng.integers(1, 3))
  while True:
    shapes = []
    for _ in range(count):
      size = rng.uniform(0.15, 0.35) * SIDE
      x, y = rng.uniform(size / 2, SIDE - size / 2, size=2)
      shapes.append((str(rng.choice(KINDS)), str(rng.choice(list(COLOURS))), x, y, size))
    if count == 2:
      (_, _, x0, y0, s0), (_, _, x1, y1, s1) = shapes
      apart = (abs(x0 - x1) > (s0 + s1) / 2 + 6) or (abs(y0 - y1) > (s0 + s1) / 2 + 6)
      clear = abs(abs(x0 - x1) - abs(y0 - y1)) > 0.1 * SIDE
      if not (apart and clear):
        continue
    break
  image = Image.new("RGB", (SIDE, SIDE), (255, 255, 255))
  pen = ImageDraw.Draw(image)
  for kind, colour, x, y, size in shapes:
    h = size / 2
    box = [x - h, y - h, x + h, y + h]
    fill = COLOURS[colour]
    if kind == "circle":
      pen.ellipse(box, fill=fill)
    elif kind == "square":
      pen.rectangle(box, fill=fill)
    else:
      pen.polygon([(x, y - h), (x + h, y + h), (x - h, y + h)], fill=fill)
  words = [f"a {colour} {kind}" for kind, colour, *_ in shapes]
  if count == 2:
    (_, _, x0, y0, _), (_, _, x1, y1, _) = shapes
    if abs(x0 - x1) > abs(y0 - y1):
      order, relation = ((0, 1) if x0 < x1 else (1, 0)), "left of"
    else:
      order, relation = ((0, 1) if y0 < y1 else (1, 0)), "above"
    return image, f"{words[order[0]]} {relation} {words[order[1]]}"
  return image, words[0]


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--workdir", required=True)
  p.add_argument("--count", type=int, default=100)
  p.add_argument("--scenes_seed", type=int, default=2024, help="the scenes' seed")
  cli.add_checkpoint_flag(p)
  p.add_argument("--show_errors", action="store_true")
  decode_options.add_flags(p)
  args = p.parse_args(argv)
  from jaxcap.captioner import Captioner  # pylint: disable=g-import-not-at-top

  captioner = Captioner.load(args.workdir, args.checkpoint or "auto")
  default = decode_options.DecodeOptions("greedy")  # exact match is a greedy measure
  options = decode_options.options_from_flags(args, default)
  rng = np.random.default_rng(args.scenes_seed)
  scenes = [draw_scene(rng) for _ in range(args.count)]
  with tempfile.TemporaryDirectory() as folder:  # through files, as sample.py reads them
    paths = [os.path.join(folder, f"{i}.png") for i in range(len(scenes))]
    for path, (image, _) in zip(paths, scenes):
      image.save(path)
    captions = [result.text for result in captioner.caption(paths, options)]
  hits = [c == truth for c, (_, truth) in zip(captions, scenes)]
  if args.show_errors:
    for c, (_, truth), ok in zip(captions, scenes, hits):
      if not ok:
        print(f"want {truth!r}, got {c!r}", file=sys.stderr)
  print(json.dumps({"workdir": args.workdir, "decoder": captioner.spec.kind,
                    "decoding": options.describe(), "images": len(hits),
                    "exact_match": sum(hits) / len(hits), "correct": sum(hits)}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
