"""Any image file -> RGB arrays, with errors that name the file.

Training and sampling both go through `resize`, so an image is preprocessed the same way
whichever path it takes.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError


class ImageError(ValueError):
  """An image file that cannot be used; the message names the file and the reason."""


def _to_rgb(img: Image.Image) -> Image.Image:
  """Any Pillow mode -> RGB; transparency is composited over white."""
  if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
    # 16/32-bit or float grayscale: rescale to 8 bits instead of clipping at 255.
    arr = np.asarray(img, dtype=np.float64)
    if img.mode.startswith("I;16") or (img.mode == "I" and arr.max() > 255):
      arr = arr / 257.0 if arr.max() <= 65535 else arr * (255.0 / arr.max())
    elif img.mode == "F" and arr.max() <= 1.0:
      arr = arr * 255.0
    img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")
  if img.mode == "P":
    img = img.convert("RGBA" if "transparency" in img.info else "RGB")
  if img.mode in ("LA", "La", "PA", "RGBa"):
    img = img.convert("RGBA")
  if img.mode == "RGBA":
    background = Image.new("RGBA", img.size, (255, 255, 255, 255))
    img = Image.alpha_composite(background, img)
  return img.convert("RGB")


def load_rgb(path: str | os.PathLike) -> np.ndarray:
  """Decodes an image file fully -> uint8 (H, W, 3), upright per its EXIF orientation.

  Raises:
    ImageError: missing, empty, not an image, truncated or otherwise undecodable.
  """
  path = os.fspath(path)
  try:
    if os.path.getsize(path) == 0:
      raise ImageError(f"{path}: empty file (0 bytes)")
    with Image.open(path) as img:
      img.load()  # decode now, so a truncated file fails here and not later
      img = ImageOps.exif_transpose(img)
      return np.asarray(_to_rgb(img), dtype=np.uint8)
  except ImageError:
    raise
  except FileNotFoundError:
    raise ImageError(f"{path}: no such file") from None
  except IsADirectoryError:
    raise ImageError(f"{path}: is a directory, not an image") from None
  except UnidentifiedImageError:
    raise ImageError(f"{path}: not an image Pillow can read") from None
  except OSError as e:  # Pillow reports truncated / corrupt data as OSError
    raise ImageError(f"{path}: unreadable image ({e})") from None
  except (ValueError, SyntaxError, Image.DecompressionBombError) as e:
    raise ImageError(f"{path}: unreadable image ({e})") from None


def resize(rgb: np.ndarray, size: int) -> np.ndarray:
  """uint8 (H, W, 3) -> float32 (size, size, 3) in [0, 1].

  Bilinear, aspect ratio not kept: the seed's `tf.image.resize(img, (S, S)) / 255`.
  """
  img = Image.fromarray(np.asarray(rgb, dtype=np.uint8))
  if img.size != (size, size):
    img = img.resize((size, size), Image.BILINEAR)
  return np.asarray(img, dtype=np.float32) / 255.0


def load_image(path: str | os.PathLike, size: int) -> np.ndarray:
  """An image file -> float32 (size, size, 3) in [0, 1], ready for an encoder."""
  return resize(load_rgb(path), size)
