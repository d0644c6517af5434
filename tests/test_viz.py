"""jaxcap.evaluation.figures: the heat map sits where the attention is, one panel per word."""

import numpy as np
import pytest
from PIL import Image

from jaxcap.evaluation import figures


def test_heat_is_where_the_attention_is():
  image = np.full((32, 32, 3), 0.5, np.float32)
  for row, col in ((0, 0), (1, 2), (2, 1)):
    weights = np.zeros(9, np.float32)
    weights[row * 3 + col] = 1.0  # all attention on one cell of a 3x3 grid
    panel = np.asarray(figures.attention_panel(image, weights), np.float32)
    assert panel.shape == (figures.PANEL, figures.PANEL, 3)
    # The reddest/yellowest (hot) region of the panel is that cell: row-major, rows first.
    heat = panel[..., 0] - panel[..., 2]
    cell = figures.PANEL / 3
    hot_y, hot_x = np.unravel_index(heat.argmax(), heat.shape)
    assert (int(hot_y // cell), int(hot_x // cell)) == (row, col)
  with pytest.raises(ValueError, match="not a square grid"):
    figures.attention_panel(image, np.ones(8) / 8)


def test_figure_has_a_panel_per_word(tmp_path):
  image = np.random.default_rng(0).random((40, 40, 3)).astype(np.float32)
  words = ["a", "red", "square", "left", "of", "a", "circle"]
  attention = np.random.default_rng(1).dirichlet(np.ones(4), size=len(words))
  path = tmp_path / "fig.png"
  figures.save_attention_figure(path, image, words, attention, title="a test")
  with Image.open(path) as figure:
    rows = -(-(len(words) + 1) // figures.COLUMNS)  # the input panel, then one per word
    assert figure.size == (figures.COLUMNS * figures.PANEL, 28 + rows * (figures.PANEL + figures.LABEL))
    # The word panels differ from each other (each shows its own weights).
    pixels = np.asarray(figure.convert("RGB"), np.float32)
  first = pixels[28:28 + figures.PANEL, figures.PANEL:2 * figures.PANEL]
  second = pixels[28:28 + figures.PANEL, 2 * figures.PANEL:3 * figures.PANEL]
  assert np.abs(first - second).mean() > 1
