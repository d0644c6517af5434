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
    from jaxcap import images
    assert images.load_rgb(path).shape[2] == 3
