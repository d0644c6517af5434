import numpy as np
import pytest
from PIL import Image

from jaxcap import images


def save(tmp_path, name, img, **kw):
  path = tmp_path / name
  img.save(path, **kw)
  return path


def test_modes_become_rgb(tmp_path):
  gray = save(tmp_path, "l.png", Image.new("L", (4, 4), 100))
  assert (images.load_rgb(gray) == 100).all()
  rgba = save(tmp_path, "rgba.png", Image.new("RGBA", (4, 4), (255, 0, 0, 0)))
  assert (images.load_rgb(rgba) == 255).all()  # fully transparent -> white, not black/red
  half = save(tmp_path, "half.png", Image.new("RGBA", (4, 4), (0, 0, 0, 128)))
  assert abs(int(images.load_rgb(half)[0, 0, 0]) - 127) <= 1
  pal = Image.new("P", (4, 4), 1)
  pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
  assert tuple(images.load_rgb(save(tmp_path, "p.png", pal))[0, 0]) == (10, 200, 30)
  pal_t = pal.copy()
  pal_t.info["transparency"] = 1
  assert tuple(images.load_rgb(save(tmp_path, "pt.png", pal_t, transparency=1))[0, 0]) == (
      255, 255, 255)
  g16 = Image.fromarray(np.full((4, 4), 65535, np.uint16))
  assert (images.load_rgb(save(tmp_path, "g16.png", g16)) == 255).all()
  g16_mid = Image.fromarray(np.full((4, 4), 257 * 40, np.uint16))
  assert (images.load_rgb(save(tmp_path, "g16m.png", g16_mid)) == 40).all()
  cmyk = save(tmp_path, "c.jpg", Image.new("CMYK", (8, 8), (0, 255, 255, 0)))
  r, g, b = images.load_rgb(cmyk)[4, 4].astype(int)
  assert r > 200 and g < 60 and b < 60
  one_bit = save(tmp_path, "1.png", Image.new("1", (4, 4), 1))
  assert (images.load_rgb(one_bit) == 255).all()


def test_exif_orientation_is_applied(tmp_path):
  arr = np.zeros((10, 20, 3), np.uint8)
  arr[:, :10] = 255  # left half white
  img = Image.fromarray(arr)
  exif = Image.Exif()
  exif[0x0112] = 6  # rotate 90 degrees clockwise to display
  path = save(tmp_path, "rot.jpg", img, exif=exif.tobytes(), quality=95)
  out = images.load_rgb(path)
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
  with pytest.raises(images.ImageError, match=str(path)):
    images.load_rgb(path)


def test_resize_and_range(tmp_path):
  path = save(tmp_path, "x.png", Image.new("RGB", (30, 10), (255, 0, 0)))
  out = images.load_image(path, 16)
  assert out.shape == (16, 16, 3) and out.dtype == np.float32
  np.testing.assert_allclose(out[..., 0], 1.0)
  np.testing.assert_allclose(out[..., 1:], 0.0)
