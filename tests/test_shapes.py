import re

import numpy as np
import pytest

from jaxcap.data import shapes

WORD = r"a (red|green|blue|yellow) (circle|square|triangle)"
GRAMMAR = re.compile(rf"^{WORD}( (left of|above) {WORD})?$")
FAMILY = {"red": lambda r, g, b: r > 150 and g < 110 and b < 110,
          "green": lambda r, g, b: g > 100 and r < 110 and b < 130,
          "blue": lambda r, g, b: b > 150 and r < 110 and g < 140,
          "yellow": lambda r, g, b: r > 170 and g > 150 and b < 100}


def test_deterministic_and_independent():
  a, ca = shapes.make_example(7, 3)
  b, cb = shapes.make_example(7, 3)
  np.testing.assert_array_equal(a, b)
  assert ca == cb == shapes.caption_of(7, 3)
  c, _ = shapes.make_example(7, 4)
  assert a.shape != c.shape or not np.array_equal(a, c)


def test_scenes_follow_the_grammar():
  rng = np.random.default_rng(0)
  counts = {1: 0, 2: 0}
  for _ in range(500):
    scene = shapes.sample_scene(rng)
    counts[len(scene)] += 1
    assert GRAMMAR.match(shapes.caption_for(scene))
    for s in scene:
      assert shapes.MIN_SIZE <= s.size <= shapes.MAX_SIZE
      x0, y0, x1, y1 = s.box()
      assert 0 <= x0 and x1 <= 1 and 0 <= y0 and y1 <= 1
    if len(scene) == 2:
      assert not shapes._overlap(*scene, margin=0.0)
  assert counts[1] > 100 and counts[2] > 100


def test_relation_rules():
  red = shapes.Shape("circle", "red", 0.8, 0.5, 0.2)
  blue = shapes.Shape("square", "blue", 0.2, 0.45, 0.2)
  assert shapes.caption_for([red, blue]) == "a blue square left of a red circle"
  assert shapes.caption_for([blue, red]) == "a blue square left of a red circle"
  top = shapes.Shape("triangle", "green", 0.45, 0.2, 0.2)
  bottom = shapes.Shape("triangle", "yellow", 0.55, 0.8, 0.2)
  assert shapes.caption_for([bottom, top]) == "a green triangle above a yellow triangle"
  # |dx| = 0.3 < |dy| = 0.4: vertical wins even though they are also apart horizontally.
  a = shapes.Shape("circle", "red", 0.2, 0.2, 0.15)
  b = shapes.Shape("circle", "blue", 0.5, 0.6, 0.15)
  assert shapes.caption_for([b, a]) == "a red circle above a blue circle"
  assert shapes.caption_for([a]) == "a red circle"


@pytest.mark.parametrize("index", range(40))
def test_rendered_colours_and_background(index):
  image, caption = shapes.make_example(11, index)
  h, w, _ = image.shape
  assert h == w
  scene, _ = shapes._scene(11, index)
  for s in scene:
    # A point well inside every kind of shape (the triangle's lower middle).
    x, y = int(s.cx * w), int((s.cy + s.size * 0.2) * h)
    assert FAMILY[s.color](*image[y, x].astype(int)), (caption, image[y, x])
  corner_free = all(not (s.box()[0] < 0.05 and s.box()[1] < 0.05) for s in scene)
  if corner_free:
    assert image[1, 1].min() >= 225


def test_write_examples(tmp_path):
  written = shapes.write_examples(tmp_path, seed=3, start=5, count=3)
  assert len(written) == 3
  for path, caption in written:
    assert GRAMMAR.match(caption)
    from jaxcap.data import image_files
    assert image_files.load_rgb(path).shape[2] == 3


def test_caption_for_more_rules():
  a = shapes.Shape("square", "green", 0.3, 0.3, 0.2)
  b = shapes.Shape("square", "green", 0.7, 0.35, 0.2)  # same colour and kind is allowed
  assert shapes.caption_for([b, a]) == "a green square left of a green square"
  c = shapes.Shape("circle", "yellow", 0.7, 0.3, 0.2)
  d = shapes.Shape("triangle", "red", 0.25, 0.8, 0.2)  # |dx| = 0.45 < |dy| = 0.5
  assert shapes.caption_for([d, c]) == "a yellow circle above a red triangle"
  e = shapes.Shape("triangle", "red", 0.2, 0.85, 0.2)  # |dx| = 0.5 < |dy| = 0.55
  assert shapes.caption_for([c, e]) == "a yellow circle above a red triangle"
  f = shapes.Shape("triangle", "red", 0.1, 0.7, 0.2)  # |dx| = 0.6 > |dy| = 0.4
  assert shapes.caption_for([c, f]) == "a red triangle left of a yellow circle"
  with pytest.raises(ValueError):
    shapes.caption_for([])
  with pytest.raises(ValueError):
    shapes.caption_for([a, b, c])


def test_single_red_circle_is_red_in_the_middle_and_white_far_away():
  circle = shapes.Shape("circle", "red", 0.3, 0.3, 0.3)
  image = shapes.render([circle], 128, np.random.default_rng(5))
  assert image.shape == (128, 128, 3) and image.dtype == np.uint8
  r, g, b = image[38, 38].astype(int)
  assert r > 180 and g < 70 and b < 70, (r, g, b)
  assert (image[100:, 100:] >= 235).all()  # far corner: near-white background
  # The circle's square box corners are background, not paint (it is round).
  assert image[int(0.16 * 128), int(0.16 * 128)].min() >= 235


def test_rendered_geometry_square_and_upward_triangle():
  rng = np.random.default_rng(0)
  square = shapes.render([shapes.Shape("square", "blue", 0.5, 0.5, 0.25)], 200, rng)
  painted = (square.astype(int).sum(-1) < 600)
  ys, xs = np.nonzero(painted)
  assert abs((xs.max() - xs.min() + 1) - 50) <= 2 and abs((ys.max() - ys.min() + 1) - 50) <= 2
  tri = shapes.render([shapes.Shape("triangle", "green", 0.5, 0.5, 0.3)], 200, rng)
  paint = tri.astype(int).sum(-1) < 600
  # Box is 70..130 px. Near the top only the middle is painted; the base spans the box.
  assert paint[74, 100] and not paint[74, 75] and not paint[74, 125]
  assert paint[127, 73] and paint[127, 127]
  assert not paint[60, 100] and not paint[140, 100]


def test_colour_shades_vary_and_include_pure():
  seen = {c: set() for c in shapes.COLORS}
  for i in range(300):
    for c in shapes.COLORS:
      seen[c].add(shapes._shade(c, np.random.default_rng([i, shapes.COLORS.index(c)])))
  for c in shapes.COLORS:
    assert shapes._PURE_RGB[c] in seen[c] and len(seen[c]) > 100
    for rgb in seen[c]:
      assert FAMILY[c](*rgb), (c, rgb)


def test_many_examples_cover_the_grammar():
  captions, sizes, backgrounds = [], set(), []
  for i in range(300):
    image, caption = shapes.make_example(2, i)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[0] == image.shape[1]
    assert GRAMMAR.match(caption), caption
    captions.append(caption)
    sizes.add(image.shape[0])
    backgrounds.append(tuple(image[0, 0]))
  assert len(sizes) >= 5 and min(sizes) <= 96 and max(sizes) >= 320
  text = " ".join(captions)
  for word in shapes.COLORS + shapes.SHAPES + ("left of", "above"):
    assert word in text
  assert len(set(backgrounds)) > 50  # background shade varies


def test_make_split_matches_make_example():
  images, captions = shapes.make_split(seed=4, start=10, count=6, image_size=32)
  assert images.shape == (6, 32, 32, 3) and images.dtype == np.float32
  assert 0.0 <= images.min() and images.max() <= 1.0
  assert captions == [shapes.caption_of(4, i) for i in range(10, 16)]
  from jaxcap.data import image_files
  np.testing.assert_array_equal(images[2], image_files.resize(shapes.make_example(4, 12)[0], 32))
  # Disjoint index ranges of one seed: the second half of [10, 16) equals [13, 16).
  tail, tail_captions = shapes.make_split(seed=4, start=13, count=3, image_size=32)
  np.testing.assert_array_equal(tail, images[3:])
  assert tail_captions == captions[3:]
