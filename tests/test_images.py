import importlib
import re

import numpy as np
import pytest
import skimage.data
from PIL import Image

from jaxcap.data import image_files


def save(tmp_path, name, img, **kw):
  path = tmp_path / name
  img.save(path, **kw)
  return path


def test_modes_become_rgb(tmp_path):
  gray = save(tmp_path, "l.png", Image.new("L", (4, 4), 100))
  assert (image_files.load_rgb(gray) == 100).all()
  rgba = save(tmp_path, "rgba.png", Image.new("RGBA", (4, 4), (255, 0, 0, 0)))
  assert (image_files.load_rgb(rgba) == 255).all()  # fully transparent -> white, not black/red
  half = save(tmp_path, "half.png", Image.new("RGBA", (4, 4), (0, 0, 0, 128)))
  assert abs(int(image_files.load_rgb(half)[0, 0, 0]) - 127) <= 1
  pal = Image.new("P", (4, 4), 1)
  pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
  assert tuple(image_files.load_rgb(save(tmp_path, "p.png", pal))[0, 0]) == (10, 200, 30)
  pal_t = pal.copy()
  pal_t.info["transparency"] = 1
  assert tuple(image_files.load_rgb(save(tmp_path, "pt.png", pal_t, transparency=1))[0, 0]) == (
      255, 255, 255)
  g16 = Image.fromarray(np.full((4, 4), 65535, np.uint16))
  assert (image_files.load_rgb(save(tmp_path, "g16.png", g16)) == 255).all()
  g16_mid = Image.fromarray(np.full((4, 4), 257 * 40, np.uint16))
  assert (image_files.load_rgb(save(tmp_path, "g16m.png", g16_mid)) == 40).all()
  cmyk = save(tmp_path, "c.jpg", Image.new("CMYK", (8, 8), (0, 255, 255, 0)))
  r, g, b = image_files.load_rgb(cmyk)[4, 4].astype(int)
  assert r > 200 and g < 60 and b < 60
  one_bit = save(tmp_path, "1.png", Image.new("1", (4, 4), 1))
  assert (image_files.load_rgb(one_bit) == 255).all()


def test_exif_orientation_is_applied(tmp_path):
  arr = np.zeros((10, 20, 3), np.uint8)
  arr[:, :10] = 255  # left half white
  img = Image.fromarray(arr)
  exif = Image.Exif()
  exif[0x0112] = 6  # rotate 90 degrees clockwise to display
  path = save(tmp_path, "rot.jpg", img, exif=exif.tobytes(), quality=95)
  out = image_files.load_rgb(path)
  assert out.shape == (20, 10, 3)
  assert out[:5].mean() > 200 and out[-5:].mean() < 50  # white half now on top


@pytest.mark.parametrize("kind", ["missing", "empty", "text", "truncated", "directory"])
def test_bad_files_raise_image_error_naming_the_file(tmp_path, kind):
  path = tmp_path / f"{kind}.jpg"
  if kind == "empty":
    path.write_bytes(b"")
  elif kind == "text":
    path.write_text("hello")
  elif kind == "truncated":
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(
        path, quality=95)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
  elif kind == "directory":
    path.mkdir()
  with pytest.raises(image_files.ImageError, match=re.escape(str(path))):
    image_files.load_rgb(path)


def test_resize_and_range(tmp_path):
  path = save(tmp_path, "x.png", Image.new("RGB", (30, 10), (255, 0, 0)))
  out = image_files.load_image(path, 16)
  assert out.shape == (16, 16, 3) and out.dtype == np.float32
  np.testing.assert_allclose(out[..., 0], 1.0)
  np.testing.assert_allclose(out[..., 1:], 0.0)


def test_more_modes_become_rgb(tmp_path):
  la = save(tmp_path, "la.png", Image.new("LA", (4, 4), (0, 0)))
  assert (image_files.load_rgb(la) == 255).all()  # transparent black -> white
  la_opaque = save(tmp_path, "la2.png", Image.new("LA", (4, 4), (60, 255)))
  assert (image_files.load_rgb(la_opaque) == 60).all()
  ycc = save(tmp_path, "ycc.tif", Image.new("YCbCr", (4, 4), (235, 128, 128)))
  assert (abs(image_files.load_rgb(ycc).astype(int) - 235) <= 2).all()
  lab = save(tmp_path, "lab.tif", Image.new("LAB", (4, 4), (255, 128, 128)))  # L* = 100
  assert (image_files.load_rgb(lab) >= 250).all()
  i32 = save(tmp_path, "i32.tif", Image.fromarray(np.full((4, 4), 257 * 90, np.int32)))
  assert (image_files.load_rgb(i32) == 90).all()
  f01 = save(tmp_path, "f.tif", Image.fromarray(np.full((4, 4), 0.5, np.float32)))
  assert (abs(image_files.load_rgb(f01).astype(int) - 128) <= 1).all()
  i16b = save(tmp_path, "i16b.tif", Image.new("I;16B", (4, 4), 257 * 200))
  assert (image_files.load_rgb(i16b) == 200).all()
  # A 16-bit ramp keeps its contrast instead of clipping at 255.
  ramp = np.linspace(0, 65535, 16).astype(np.uint16).reshape(4, 4)
  out = image_files.load_rgb(save(tmp_path, "ramp16.png", Image.fromarray(ramp)))[..., 0]
  np.testing.assert_array_equal(out, np.rint(ramp / 257).astype(np.uint8))
  # Colour-key transparency (PNG tRNS) on RGB, an RGBA palette and a transparent GIF.
  trns = save(tmp_path, "trns.png", Image.new("RGB", (4, 4), (10, 20, 30)),
              transparency=(10, 20, 30))
  assert (image_files.load_rgb(trns) == 255).all()
  pal = Image.new("P", (4, 4), 0)
  pal.putpalette([200, 10, 10, 0] + [0, 0, 0, 255] * 255, "RGBA")
  assert (image_files.load_rgb(save(tmp_path, "prgba.png", pal)) == 255).all()
  gif = Image.new("P", (4, 4), 3)
  gif.putpalette([0, 0, 0] * 3 + [9, 9, 9] + [0] * 756)
  assert (image_files.load_rgb(save(tmp_path, "t.gif", gif, transparency=3)) == 255).all()
  gif_opaque = save(tmp_path, "o.gif", gif)
  assert (image_files.load_rgb(gif_opaque) == 9).all()
  for path in (la, ycc, lab, i32, f01, i16b, trns, gif_opaque):
    out = image_files.load_rgb(path)
    assert out.dtype == np.uint8 and out.shape == (4, 4, 3), path


@pytest.mark.parametrize("kind, words", [
    ("missing", "no such file"), ("empty", "zero bytes"), ("text", "not an image"),
    ("truncated", "truncated"), ("truncated_png", "truncated"), ("directory", "directory")])
def test_error_messages_say_what_is_wrong(tmp_path, kind, words):
  path = tmp_path / "odd name (1)+.png"
  rng = np.random.default_rng(1)
  if kind == "empty":
    path.write_bytes(b"")
  elif kind == "text":
    path.write_text("just some text, certainly not a picture\n" * 10)
  elif kind == "truncated":
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), np.uint8)).save(path, "JPEG")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
  elif kind == "truncated_png":
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), np.uint8)).save(path, "PNG")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
  elif kind == "directory":
    path.mkdir()
  with pytest.raises(image_files.ImageError) as info:
    image_files.load_image(path, 8)
  message = str(info.value)
  assert str(path) in message and words in message, message
  assert isinstance(info.value, ValueError)


def test_resize_contract():
  gray = np.full((5, 7), 200, np.uint8)
  out = image_files.resize(gray, 3)
  assert out.shape == (3, 3, 3) and out.dtype == np.float32
  np.testing.assert_allclose(out, 200 / 255, rtol=1e-6)
  ints = image_files.resize(np.full((4, 4, 3), 255, np.int64), 2)
  np.testing.assert_allclose(ints, 1.0)
  same = np.random.default_rng(0).integers(0, 256, (6, 6, 3), np.uint8)
  np.testing.assert_array_equal(image_files.resize(same, 6), same.astype(np.float32) / 255)
  big = image_files.resize(np.zeros((300, 40, 3), np.uint8), 224)
  assert big.shape == (224, 224, 3) and 0 <= big.min() and big.max() <= 1
  with pytest.raises(ValueError):
    image_files.resize(np.zeros((4, 4, 3), np.float32), 2)  # floats are ambiguous: refuse
  with pytest.raises(ValueError):
    image_files.resize(np.zeros((4, 4, 4), np.uint8), 2)
  with pytest.raises(ValueError):
    image_files.resize(np.full((4, 4, 3), 300, np.int32), 2)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee", "rocket"])
def test_tf_bilinear_is_tf_image_resize(name):
  # The seed's preprocessing, `tf.image.resize(img, (S, S)) / 255`, run by TensorFlow itself.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (slow to import: here only)
  photo = getattr(skimage.data, name)()  # real photos, 300x451 to 512x512
  for size in (299, 160, 37, 640):  # the seed's, the quickstart's, a 14x shrink, an enlargement
    want = (tf.image.resize(photo, (size, size)) / 255).numpy()
    got = image_files.resize(photo, size, "tf_bilinear")
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5, err_msg=f"{name} at {size}")


def test_pil_bilinear_antialiases_and_tf_bilinear_does_not():
  stripes = np.zeros((64, 64, 3), np.uint8)
  stripes[:, ::4] = 255  # one white column in four: an average grey of 0.25
  pil = image_files.resize(stripes, 16, "pil_bilinear")
  tf_like = image_files.resize(stripes, 16, "tf_bilinear")
  # Low-pass filtered: every output mixes white and black (its triangle filter spans 8 columns).
  assert abs(pil.mean() - 0.25) < 0.01 and 0.15 < pil.min() and pil.max() < 0.35
  # Each output reads columns 4i+1 and 4i+2 only, both black: the white ones vanish.
  np.testing.assert_array_equal(tf_like, 0.0)
  with pytest.raises(ValueError, match="unknown resize method"):
    image_files.resize(stripes, 16, "bicubic")


def test_every_config_names_its_resize():
  for name in ("quickstart", "jsonl", "coco", "flickr8k"):
    config = importlib.import_module(f"configs.{name}").get_config()
    assert image_files.resize_method_of(config.encoder) in image_files.RESIZE_METHODS, name
    assert "resize" in config.encoder, name  # set, not left to the default for old configs
  # the seed's tf.image.resize for the seed's config
  assert importlib.import_module("configs.coco").get_config().encoder.resize == "tf_bilinear"
