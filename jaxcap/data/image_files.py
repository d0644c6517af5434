"""Any image file -> RGB arrays, with errors that name the file.

Training and sampling both go through `resize`, so an image is preprocessed the same way
whichever path it takes:

  load_rgb(path)                 -> uint8   (H, W, 3), upright, RGB, transparency over white
  resize(rgb, size, method)      -> float32 (size, size, 3) in [0, 1]
  load_image(path, size, method) == resize(load_rgb(path), size, method)

Two bilinear resizes (`RESIZE_METHODS`, the config's `encoder.resize`):
  "tf_bilinear":  the seed's `tf.image.resize(img, (S, S))` (half-pixel centres, no
                  antialiasing: shrinking samples 2x2 pixels per output and aliases);
  "pil_bilinear": Pillow's BILINEAR, which widens its filter when shrinking (antialiased).
"""

from __future__ import annotations

import io
import os
import struct
import zlib

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from jaxcap import compat

_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")
_WITH_ALPHA = ("RGBA", "LA", "PA", "RGBa", "La")


class ImageError(ValueError):
  """An image file that cannot be used; the message names the file and the reason."""


class ImageTooLarge(ImageError):
  """An image over the pixel budget (`max_pixels`) or Pillow's decompression-bomb limit."""


_BLOCK = 1 << 22  # elements converted at a time, so a large 16-bit image needs no float copy


def _high_range_to_l(img: Image.Image) -> Image.Image:
  """16/32-bit integer or float grayscale -> 8-bit "L", rescaled rather than clipped.

  I;16*: always 0..65535 -> /257.  I (32-bit): /257 when it goes past 255 but stays within
  16 bits (older Pillows open 16-bit PNGs as "I"), else scaled by its maximum.  F: [0, 1]
  when its maximum is <= 1, else taken as 0..255.
  """
  arr = np.asarray(img)
  peak = float(np.nanmax(arr)) if arr.size and not np.isnan(arr).all() else 0.0
  scale = 1.0
  if img.mode in _SIXTEEN_BIT:
    scale = 1 / 257.0
  elif img.mode == "I" and peak > 255:
    scale = 1 / 257.0 if peak <= 65535 else 255.0 / peak
  elif img.mode == "F" and peak <= 1.0:
    scale = 255.0
  out = np.empty(arr.shape, np.uint8)
  rows = max(1, _BLOCK // max(1, arr.shape[1] if arr.ndim > 1 else 1))
  for start in range(0, len(arr), rows):  # float64 one block at a time
    block = arr[start:start + rows].astype(np.float64)
    block = block / 257.0 if scale == 1 / 257.0 else block * scale
    out[start:start + rows] = np.clip(np.rint(np.nan_to_num(block)), 0, 255)
  return Image.fromarray(out, "L")


def _to_rgb(img: Image.Image) -> Image.Image:
  """Any Pillow mode -> "RGB"; transparency (alpha, tRNS, palette) is composited over white.

  Raises ValueError for a mode Pillow cannot convert.
  """
  if img.mode in _SIXTEEN_BIT or img.mode in ("I", "F"):
    img = _high_range_to_l(img)
  if img.mode == "La":  # premultiplied; Pillow converts it to nothing else but LA
    img = img.convert("LA")
  if img.mode in _WITH_ALPHA or img.has_transparency_data:
    # P with a transparent index, RGBA palettes, L/RGB with a tRNS colour key, LA, ...
    img = img.convert("RGBA")
    background = Image.new("RGBA", img.size, (255, 255, 255, 255))
    img = Image.alpha_composite(background, img)
  return img.convert("RGB")


def from_pil(img: Image.Image) -> np.ndarray:
  """A Pillow image -> uint8 (H, W, 3), as `load_rgb` reads files: upright per its EXIF
  orientation, transparency over white. Raises ValueError for a mode Pillow cannot convert."""
  return np.asarray(_to_rgb(ImageOps.exif_transpose(img)), dtype=np.uint8)


def load_rgb(path: str | os.PathLike, max_pixels: int | None = None) -> np.ndarray:
  """Decodes an image file fully -> uint8 (H, W, 3), upright per its EXIF orientation.

  Any format and mode Pillow reads: grayscale, 1-bit, palette, CMYK, YCbCr, LAB, 16-bit and
  float grayscale (rescaled to 8 bits), and anything with alpha (composited over white).
  `max_pixels` bounds the pixels decoded (None: Pillow's bomb limit only): a larger JPEG is
  decoded at 1/2, 1/4 or 1/8 scale (`Image.draft`, in the decoder, so the full size never
  exists in memory) when that fits; any other larger image is refused by its header, before
  decoding.

  Raises:
    ImageError: missing, empty, not an image, truncated, corrupt, too large
      (`ImageTooLarge`) or of an unsupported mode; the message starts with the path.
  """
  path = os.fspath(path)
  try:
    if os.path.isdir(path):
      raise ImageError(f"{path}: is a directory, not an image file")
    if os.path.getsize(path) == 0:
      raise ImageError(f"{path}: empty file (zero bytes), not an image")
  except FileNotFoundError as e:
    raise ImageError(f"{path}: no such file (missing)") from e
  return _decode(path, path, max_pixels)


def decode_rgb(data: bytes, name: str = "image", max_pixels: int | None = None) -> np.ndarray:
  """`load_rgb` for an image held in memory (e.g. an upload); errors start with `name`."""
  if not data:
    raise ImageError(f"{name}: empty file (zero bytes), not an image")
  return _decode(io.BytesIO(data), name, max_pixels)


def _decode(source, name: str, max_pixels: int | None) -> np.ndarray:
  """Shared by `load_rgb` and `decode_rgb`: `source` is a path or a binary file object."""

  def fail(reason: str) -> ImageError:
    return ImageError(f"{name}: {reason}")

  try:
    with Image.open(source) as img:
      fmt = img.format
      width, height = img.size  # from the header; nothing decoded yet
      if max_pixels is not None and width * height > max_pixels and fmt == "JPEG":
        # The smallest power-of-two reduction (at most 8) that fits, done while decoding.
        scale = 1  # libjpeg rounds the reduced size up
        while scale < 8 and -(-width // scale) * -(-height // scale) > max_pixels:
          scale *= 2
        img.draft(None, (max(1, width // scale), max(1, height // scale)))
      if max_pixels is not None and img.size[0] * img.size[1] > max_pixels:
        raise ImageTooLarge(f"{name}: image too large: {width}x{height} pixels, over the "
                            f"budget of {max_pixels:,} pixels")
      img.load()  # decode everything now, so a truncated file fails here and not later
      img = ImageOps.exif_transpose(img)
      try:
        rgb = _to_rgb(img)
      except ValueError as e:
        raise fail(f"unsupported image mode {img.mode!r} in this {fmt} file ({e})") from e
      return np.asarray(rgb, dtype=np.uint8)
  except ImageError:
    raise
  except FileNotFoundError as e:
    raise fail("no such file (missing)") from e
  except PermissionError as e:
    raise fail("permission denied") from e
  except UnidentifiedImageError as e:
    raise fail("not an image (Pillow cannot identify its format)") from e
  except Image.DecompressionBombError as e:
    raise ImageTooLarge(f"{name}: image too large to decode safely ({e})") from e
  except OSError as e:  # Pillow reports truncated / corrupt / undecodable data as OSError
    text = str(e)
    if "truncated" in text.lower():
      reason = f"truncated image file ({text})"
    elif "decoder" in text and "not available" in text:
      reason = f"unsupported image encoding ({text})"
    else:
      reason = f"corrupt or unreadable image data ({text})"
    raise fail(reason) from e
  except (ValueError, SyntaxError, EOFError, IndexError, KeyError, TypeError, struct.error,
          zlib.error) as e:  # what Pillow's format plugins raise on malformed files
    raise fail(f"corrupt or unreadable image data ({type(e).__name__}: {e})") from e


RESIZE_METHODS = ("tf_bilinear", "pil_bilinear")


def check_resize_method(method: str) -> str:
  """`method` if it is one of RESIZE_METHODS; ValueError otherwise."""
  if method not in RESIZE_METHODS:
    raise ValueError(f"unknown resize method {method!r}; choose one of "
                     f"{', '.join(RESIZE_METHODS)}")
  return method


def resize_method_of(encoder_config) -> str:
  """How images are resized to the encoder's input size (`RESIZE_METHODS`): the config's
  `encoder.resize`, checked (configs older than that field: see `jaxcap.compat`)."""
  return check_resize_method(compat.resize_of_encoder_config(encoder_config))


def _tf_axis(in_size: int, out_size: int):
  """TensorFlow's bilinear sampling along one axis (resize_bilinear_op.cc with half-pixel
  centres), in float32 as it computes: (lower index, upper index, weight of upper), each
  (out_size,)."""
  scale = np.float32(in_size) / np.float32(out_size)
  x = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
  floor = np.floor(x)
  lower = np.maximum(floor, 0).astype(np.int64)
  upper = np.minimum(np.ceil(x), in_size - 1).astype(np.int64)
  return lower, upper, (x - floor)[:, None]


def _tf_bilinear(arr: np.ndarray, size: int) -> np.ndarray:
  """uint8 (H, W, 3) -> float32 (size, size, 3) in 0..255, as `tf.image.resize` (bilinear,
  antialias=False) computes it."""
  arr = arr.astype(np.float32)
  y0, y1, wy = _tf_axis(arr.shape[0], size)
  x0, x1, wx = _tf_axis(arr.shape[1], size)
  wx = wx[None]  # (1, size, 1)
  top, bottom = arr[y0], arr[y1]  # (size, W, 3) each
  top = top[:, x0] + (top[:, x1] - top[:, x0]) * wx
  bottom = bottom[:, x0] + (bottom[:, x1] - bottom[:, x0]) * wx
  return top + (bottom - top) * wy[:, :, None]


def resize(rgb: np.ndarray, size: int, method: str = "pil_bilinear") -> np.ndarray:
  """uint8 (H, W, 3) -> float32 (size, size, 3) in [0, 1].

  Bilinear by `method` (see `RESIZE_METHODS`), aspect ratio not kept, then / 255: the seed's
  `tf.image.resize(img, (S, S)) / 255` exactly with "tf_bilinear". A grayscale (H, W) array
  is repeated into three channels. Integer arrays must hold values in 0..255; floats are
  refused, since they are usually already in [0, 1].
  """
  check_resize_method(method)
  arr = np.asarray(rgb)
  if arr.ndim == 2:
    arr = np.repeat(arr[:, :, None], 3, axis=2)
  if arr.ndim != 3 or arr.shape[2] != 3:
    raise ValueError(f"resize wants an (H, W, 3) RGB array, got shape {arr.shape}")
  if arr.dtype != np.uint8:
    if not np.issubdtype(arr.dtype, np.integer):
      raise ValueError(f"resize wants uint8 pixels 0..255, got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() > 255):
      raise ValueError(f"resize wants pixels in 0..255, got {arr.min()}..{arr.max()}")
    arr = arr.astype(np.uint8)
  if method == "tf_bilinear":
    return _tf_bilinear(arr, size) / np.float32(255.0)
  img = Image.fromarray(arr)
  if img.size != (size, size):
    img = img.resize((size, size), Image.BILINEAR)
  return np.asarray(img, dtype=np.float32) / np.float32(255.0)


def load_image(path: str | os.PathLike, size: int, method: str = "pil_bilinear") -> np.ndarray:
  """An image file -> float32 (size, size, 3) in [0, 1], ready for an encoder.

  Raises ImageError (see `load_rgb`).
  """
  return resize(load_rgb(path), size, method)
