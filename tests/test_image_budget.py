"""The pixel budget of `image_files.decode_rgb`: large JPEGs decode reduced (draft), other
large images are refused by their header; 16-bit images convert without a float copy."""

import io

import numpy as np
import pytest
from PIL import Image

from jaxcap.data import image_files


def encoded(array, fmt, **kwargs):
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, fmt, **kwargs)
  return buffer.getvalue()


def test_a_large_jpeg_decodes_reduced_within_the_budget():
  rng = np.random.default_rng(0)
  photo = np.repeat(np.repeat((rng.random((300, 400, 3)) * 255).astype(np.uint8), 10, 0), 10, 1)
  data = encoded(photo, "JPEG", quality=95)  # 3000 x 4000
  assert image_files.decode_rgb(data, "p.jpg", 20_000_000).shape == (3000, 4000, 3)
  half = image_files.decode_rgb(data, "p.jpg", 4_000_000)
  assert half.shape == (1500, 2000, 3)
  eighth = image_files.decode_rgb(data, "p.jpg", 200_000)
  assert eighth.shape == (375, 500, 3)
  # The reduced decode is the image, smaller (blocks of 10x10 pixels -> 1.25x1.25).
  small = np.asarray(Image.fromarray(photo).resize((500, 375), Image.BOX), np.float32)
  assert np.abs(eighth.astype(np.float32) - small).mean() < 12
  with pytest.raises(image_files.ImageTooLarge, match="4000x3000 pixels, over the budget"):
    image_files.decode_rgb(data, "p.jpg", 100_000)  # even 1/8 is too many


def test_other_formats_over_the_budget_are_refused_before_decoding():
  data = encoded(np.zeros((300, 400, 3), np.uint8), "PNG")
  assert image_files.decode_rgb(data, "a.png", 120_000).shape == (300, 400, 3)
  with pytest.raises(image_files.ImageTooLarge, match="a.png: image too large: 400x300"):
    image_files.decode_rgb(data, "a.png", 119_999)


def test_sixteen_bit_grayscale_converts_as_before():
  rng = np.random.default_rng(1)
  values = rng.integers(0, 65536, (70, 90)).astype(np.uint16)
  image = Image.frombytes("I;16", (90, 70), values.tobytes())
  data = io.BytesIO()
  image.save(data, "PNG")
  rgb = image_files.decode_rgb(data.getvalue(), "g.png")
  expected = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
  np.testing.assert_array_equal(rgb[..., 0], expected)
  np.testing.assert_array_equal(rgb[..., 2], expected)
