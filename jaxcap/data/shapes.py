"""The built-in dataset: synthetic shapes with captions, generated deterministically.

The grammar (others draw their own images to it, so it is fixed):
  - a square RGB image on a light near-white background, any size;
  - 1 or 2 filled shapes from {circle, square, triangle (pointing up)} in
    {red, green, blue, yellow}, each 15-35% of the image side, not overlapping;
  - one shape: "a {color} {shape}";
  - two shapes: "a {color} {shape} left of a {color} {shape}" (leftmost first) when their
    centres are further apart horizontally than vertically, else
    "a {color} {shape} above a {color} {shape}" (upper first).

Example (seed, index) is a pure function of those two numbers, so splits are index ranges.
Run `python -m jaxcap.data.shapes --out DIR --count N` to write PNGs and their captions.
"""

from __future__ import annotations

import argparse
import dataclasses
import os

import numpy as np
import tqdm
from PIL import Image, ImageDraw

from jaxcap.data import image_files

COLORS = ("red", "green", "blue", "yellow")
SHAPES = ("circle", "square", "triangle")
MIN_SIZE, MAX_SIZE = 0.15, 0.35  # shape side as a fraction of the image side
_BASE_RGB = {"red": (220, 30, 30), "green": (30, 160, 50), "blue": (30, 70, 220),
             "yellow": (235, 200, 20)}
_PURE_RGB = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255),
             "yellow": (255, 255, 0)}
_RENDER_SIZES = (64, 96, 128, 160, 224, 256, 320, 400)
_SUPERSAMPLE = 3


@dataclasses.dataclass(frozen=True)
class Shape:
  """One shape; centre (cx, cy; y grows downwards) and size (the side of its square bounding
  box: circle diameter, square side, triangle base = height) are fractions of the image side.
  """
  kind: str
  color: str
  cx: float
  cy: float
  size: float

  def box(self) -> tuple[float, float, float, float]:
    h = self.size / 2
    return self.cx - h, self.cy - h, self.cx + h, self.cy + h


def caption_for(shapes: list[Shape]) -> str:
  """The grammar's caption for a scene of one or two shapes (the captions' single source).

  Two shapes: "left of" (leftmost first) when their centres are further apart horizontally
  than vertically, else "above" (upper first); a tie counts as vertical.
  """
  if len(shapes) not in (1, 2):
    raise ValueError(f"a scene has 1 or 2 shapes, got {len(shapes)}")
  if len(shapes) == 1:
    return f"a {shapes[0].color} {shapes[0].kind}"
  a, b = shapes
  if abs(a.cx - b.cx) > abs(a.cy - b.cy):
    first, second = (a, b) if a.cx < b.cx else (b, a)
    relation = "left of"
  else:
    first, second = (a, b) if a.cy < b.cy else (b, a)
    relation = "above"
  return f"a {first.color} {first.kind} {relation} a {second.color} {second.kind}"


def _overlap(a: Shape, b: Shape, margin: float = 0.03) -> bool:
  ax0, ay0, ax1, ay1 = a.box()
  bx0, by0, bx1, by1 = b.box()
  return not (ax1 + margin <= bx0 or bx1 + margin <= ax0 or
              ay1 + margin <= by0 or by1 + margin <= ay0)


def _random_shape(rng: np.random.Generator) -> Shape:
  size = rng.uniform(MIN_SIZE, MAX_SIZE)
  lo, hi = size / 2 + 0.01, 1 - size / 2 - 0.01
  return Shape(str(rng.choice(SHAPES)), str(rng.choice(COLORS)), rng.uniform(lo, hi),
               rng.uniform(lo, hi), size)


def sample_scene(rng: np.random.Generator) -> list[Shape]:
  """One or two shapes (2 in 60% of scenes), each 15-35% of the side and inside the image.

  Two shapes' bounding boxes stay at least 3% of the side apart (rejection sampling).
  """
  first = _random_shape(rng)
  if rng.random() < 0.4:
    return [first]
  while True:
    second = _random_shape(rng)
    if not _overlap(first, second):
      return [first, second]


def _shade(color: str, rng: np.random.Generator) -> tuple[int, int, int]:
  if rng.random() < 0.2:  # other programs often use pure primaries
    return _PURE_RGB[color]
  jitter = rng.integers(-30, 31, size=3)
  return tuple(int(v) for v in np.clip(np.array(_BASE_RGB[color]) + jitter, 0, 255))


def render(shapes: list[Shape], size: int, rng: np.random.Generator) -> np.ndarray:
  """Draws a scene -> uint8 (size, size, 3), anti-aliased by supersampling.

  `rng` picks the near-white background (each channel 235..255) and each shape's shade (its
  colour's base jittered by up to +-30 per channel, or 1 time in 5 the pure primary).
  """
  big = size * _SUPERSAMPLE
  background = tuple(int(v) for v in rng.integers(235, 256, size=3))
  img = Image.new("RGB", (big, big), background)
  draw = ImageDraw.Draw(img)
  for s in shapes:
    x0, y0, x1, y1 = (v * big for v in s.box())
    fill = _shade(s.color, rng)
    if s.kind == "circle":
      draw.ellipse((x0, y0, x1, y1), fill=fill)
    elif s.kind == "square":
      draw.rectangle((x0, y0, x1, y1), fill=fill)
    elif s.kind == "triangle":  # pointing up: apex at the top centre, base along the bottom
      draw.polygon([((x0 + x1) / 2, y0), (x0, y1), (x1, y1)], fill=fill)
    else:
      raise ValueError(f"unknown shape kind {s.kind!r}; expected one of {SHAPES}")
  return np.asarray(img.resize((size, size), Image.BOX), dtype=np.uint8)


def _scene(seed: int, index: int) -> tuple[list[Shape], np.random.Generator]:
  rng = np.random.default_rng([seed, index])
  return sample_scene(rng), rng


def caption_of(seed: int, index: int) -> str:
  """Example (seed, index)'s caption, without drawing it."""
  return caption_for(_scene(seed, index)[0])


def make_example(seed: int, index: int) -> tuple[np.ndarray, str]:
  """Example (seed, index): uint8 (S, S, 3) image at a size drawn from 64..400, caption."""
  scene, rng = _scene(seed, index)
  size = int(rng.choice(_RENDER_SIZES))
  return render(scene, size, rng), caption_for(scene)


def make_split(seed: int, start: int, count: int, image_size: int
               ) -> tuple[np.ndarray, list[str]]:
  """Examples start..start+count-1, resized like any image (`jaxcap.data.image_files.resize`).

  Returns float32 (count, image_size, image_size, 3) in [0, 1] and the count captions.
  Splits are disjoint index ranges of one seed, e.g. train [0, N), val [N, N+M), ...
  Memory is count * image_size**2 * 12 bytes (6000 at 224 px: 3.6 GB).
  """
  images = np.empty((count, image_size, image_size, 3), np.float32)
  captions = []
  indices = range(start, start + count)
  for j, index in enumerate(tqdm.tqdm(indices, desc=f"shapes {start}..{start + count - 1}",
                                      unit="img", disable=count < 500)):
    image, caption = make_example(seed, index)
    images[j] = image_files.resize(image, image_size)
    captions.append(caption)
  return images, captions


def write_examples(folder, seed: int, start: int, count: int) -> list[tuple[str, str]]:
  """Saves examples start..start+count-1 as PNGs; returns [(path, caption)]."""
  os.makedirs(folder, exist_ok=True)
  out = []
  for index in range(start, start + count):
    image, caption = make_example(seed, index)
    path = os.path.join(folder, f"shapes_{seed}_{index:06d}.png")
    Image.fromarray(image).save(path)
    out.append((path, caption))
  return out


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description="Write synthetic shapes images and captions.")
  p.add_argument("--out", required=True, help="folder for the PNGs (and captions.tsv)")
  p.add_argument("--count", type=int, default=6)
  p.add_argument("--seed", type=int, default=99, help="generator seed (training uses 1234)")
  p.add_argument("--start", type=int, default=0)
  args = p.parse_args(argv)
  written = write_examples(args.out, args.seed, args.start, args.count)
  with open(os.path.join(args.out, "captions.tsv"), "w") as f:
    for path, caption in written:
      f.write(f"{path}\t{caption}\n")
      print(f"{path}\t(true caption) {caption}")


if __name__ == "__main__":
  main()
