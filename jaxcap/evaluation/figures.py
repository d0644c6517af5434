"""Attention figures in the style of "Show, Attend and Tell": one panel per generated word."""

from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PANEL = 160  # pixels per panel side
LABEL = 22  # pixels under each panel for its word
COLUMNS = 5


def _heat_colors(values: np.ndarray) -> np.ndarray:
  """values (H, W) in [0, 1] -> RGB (H, W, 3) uint8 on a dark-blue..red..yellow ramp."""
  v = np.clip(values, 0.0, 1.0)[..., None]
  stops = np.array([[0, 0, 96], [0, 96, 255], [255, 64, 0], [255, 255, 0]], np.float32)
  pos = v * (len(stops) - 1)
  low = np.floor(pos).astype(int).clip(0, len(stops) - 2)
  frac = pos - low
  rgb = stops[low[..., 0]] * (1 - frac) + stops[low[..., 0] + 1] * frac
  return rgb.astype(np.uint8)


def attention_panel(image: np.ndarray, weights: np.ndarray) -> Image.Image:
  """One panel: image (S, S, 3) float in [0, 1] under a heat map of weights (P,) = (g*g,)."""
  grid = int(round(math.sqrt(weights.shape[0])))
  if grid * grid != weights.shape[0]:
    raise ValueError(f"attention over {weights.shape[0]} positions is not a square grid")
  base = Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).resize((PANEL, PANEL))
  peak = float(weights.max()) or 1.0
  heat_small = Image.fromarray((weights.reshape(grid, grid) / peak * 255).astype(np.uint8))
  heat = np.asarray(heat_small.resize((PANEL, PANEL), Image.BILINEAR), np.float32) / 255
  overlay = Image.fromarray(_heat_colors(heat))
  return Image.blend(base.convert("RGB"), overlay, 0.5)


def attention_figure(image: np.ndarray, words: Sequence[str], attention: np.ndarray,
                     title: str = "") -> Image.Image:
  """The image, then one heat-map panel per word.

  Args:
    image: (S, S, 3) float in [0, 1], what the encoder saw.
    words: the generated words, `<end>` excluded.
    attention: (L, P) weights of each generated step; row i belongs to words[i].
    title: a line of text on top (e.g. the caption or the file name).
  """
  font = ImageFont.load_default(size=15)
  panels = [(Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).resize(
      (PANEL, PANEL)), "(input)")]
  panels += [(attention_panel(image, attention[i]), word) for i, word in enumerate(words)]
  rows = math.ceil(len(panels) / COLUMNS)
  top = 28 if title else 0
  figure = Image.new("RGB", (COLUMNS * PANEL, top + rows * (PANEL + LABEL)), "white")
  draw = ImageDraw.Draw(figure)
  if title:
    draw.text((6, 6), title, fill="black", font=font)
  for i, (panel, word) in enumerate(panels):
    x, y = (i % COLUMNS) * PANEL, top + (i // COLUMNS) * (PANEL + LABEL)
    figure.paste(panel, (x, y))
    draw.text((x + PANEL / 2, y + PANEL + 3), word, fill="black", font=font, anchor="mt")
  return figure


def save_attention_figure(path: str | os.PathLike, image, words, attention, title="") -> None:
  attention_figure(image, words, attention, title).save(path)
