"""InceptionResNetV2 (the seed's encoder) as pure functions, reading Keras's ImageNet weights.

The weights are Keras's `inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5`, a
legacy Keras HDF5 weights file read here with h5py (no TensorFlow, no Keras). Like the seed,
`features` takes images in [0, 1] as they are: the seed never applied Inception's [-1, 1]
preprocessing, and a faithful port does not either.

Layers are matched to the file as Keras creates them: every `conv2d_bn` makes an unnamed
Conv2D and an unnamed BatchNormalization, so the k-th convolution by Keras's name numbering
("conv2d", "conv2d_1", ...) goes with the k-th BatchNormalization; the residual projections
("block35_1_conv", ...) and "conv_7b" have names of their own. BatchNorm (eps 1e-3, no
scale) is folded into its convolution at load time since the encoder is frozen.

Parameter tree: {"convs": [{"kernel": (kh, kw, in, out), "bias": (out,)}, ...] in creation
order, "named": {"block35_1_conv": {...}, ..., "conv_7b": {...}}}.
"""

from __future__ import annotations

import os
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np

NAME = "inception_resnet_v2"
IMAGE_SIZE = 299
FEATURE_DIM = 1536
GRID = 8  # 8 x 8 = 64 positions at 299 x 299
MIN_IMAGE_SIZE = 75  # the smallest input whose stride-2 stages leave a grid
WEIGHTS_FILENAME = "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5"
WEIGHTS_URL = ("https://storage.googleapis.com/tensorflow/keras-applications/"
               "inception_resnet_v2/" + WEIGHTS_FILENAME)
_BN_EPSILON = 1e-3
_BLOCKS = (("block35", 10, 0.17), ("block17", 20, 0.1), ("block8", 10, 0.2))


def default_weights_path() -> pathlib.Path:
  """$JAXCAP_WEIGHTS_DIR/<file>, else ~/.keras/models/<file> (where Keras caches it)."""
  folder = os.environ.get("JAXCAP_WEIGHTS_DIR") or os.path.join(
      os.path.expanduser("~"), ".keras", "models")
  return pathlib.Path(folder) / WEIGHTS_FILENAME


def _missing_weights_message(path: pathlib.Path) -> str:
  return (f"InceptionResNetV2 ImageNet weights not found: {path}\n"
          f"Put the file {WEIGHTS_FILENAME} in {path.parent} (or set JAXCAP_WEIGHTS_DIR to the "
          f"folder holding it, or pass --config.encoder.weights=PATH). It comes from\n  "
          f"{WEIGHTS_URL}\nwhich is also what `keras.applications.InceptionResNetV2("
          f"weights='imagenet', include_top=False)` downloads into ~/.keras/models on a "
          f"machine with internet access.")


def _suffix(name: str) -> int:
  match = re.search(r"_(\d+)$", name)
  return int(match.group(1)) if match else 0


def _read_h5(path: pathlib.Path) -> dict[str, dict[str, np.ndarray]]:
  """{layer name: {weight short name ("kernel", "bias", "beta", ...): array}}."""
  import h5py  # pylint: disable=g-import-not-at-top
  out = {}
  with h5py.File(path, "r") as f:
    group = f["model_weights"] if "model_weights" in f else f
    if "layer_names" not in group.attrs:
      raise ValueError(f"{path}: not a Keras HDF5 weights file (no layer_names)")
    for layer in group.attrs["layer_names"]:
      layer = layer.decode("utf8") if isinstance(layer, bytes) else str(layer)
      weights = {}
      for weight in group[layer].attrs["weight_names"]:
        weight = weight.decode("utf8") if isinstance(weight, bytes) else str(weight)
        short = weight.split("/")[-1].split(":")[0]
        weights[short] = np.asarray(group[layer][weight], np.float32)
      if weights:
        out[layer] = weights
  return out


def _fold(conv: dict, bn: dict | None) -> dict:
  kernel = conv["kernel"]
  if bn is None:
    return {"kernel": jnp.asarray(kernel), "bias": jnp.asarray(conv["bias"])}
  inv = bn.get("gamma", 1.0) / np.sqrt(bn["moving_variance"] + _BN_EPSILON)
  return {"kernel": jnp.asarray(kernel * inv),
          "bias": jnp.asarray(bn["beta"] - bn["moving_mean"] * inv)}


def load_params(path: str | os.PathLike | None = None) -> dict:
  """Reads the Keras weights file (default: `default_weights_path()`); never falls back to
  random weights."""
  path = pathlib.Path(path) if path else default_weights_path()
  if not path.is_file():
    raise FileNotFoundError(_missing_weights_message(path))
  layers = _read_h5(path)
  convs = sorted((n for n in layers if re.fullmatch(r"conv2d(_\d+)?", n)), key=_suffix)
  norms = sorted((n for n in layers if re.fullmatch(r"batch_normalization(_\d+)?", n)),
                 key=_suffix)
  if len(convs) != len(norms) or not convs:
    raise ValueError(f"{path}: expected paired conv2d / batch_normalization layers, found "
                     f"{len(convs)} and {len(norms)}")
  named = {n: _fold(layers[n], layers.get(n + "_bn"))
           for n in layers if re.fullmatch(r"block(35|17|8)_\d+_conv|conv_7b", n)}
  return {"convs": [_fold(layers[c], layers[b]) for c, b in zip(convs, norms)],
          "named": named}


class _Convs:
  """Hands out the conv2d_bn parameters in Keras's creation order during tracing."""

  def __init__(self, params):
    self._convs, self._next = params["convs"], 0

  def __call__(self, x, stride=1, padding="SAME", activation=True):
    p = self._convs[self._next]
    self._next += 1
    return _conv(p, x, stride, padding, activation)


def _conv(p, x, stride=1, padding="SAME", activation=True):
  y = jax.lax.conv_general_dilated(
      x, p["kernel"].astype(x.dtype), (stride, stride), padding,
      dimension_numbers=("NHWC", "HWIO", "NHWC")) + p["bias"].astype(x.dtype)
  return jax.nn.relu(y) if activation else y


def _max_pool(x):
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), "VALID")


def _avg_pool_same(x):
  """3x3 stride-1 'same' average that, like Keras/TF, ignores the padding."""
  window, strides = (1, 3, 3, 1), (1, 1, 1, 1)
  total = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, strides, "SAME")
  count = jax.lax.reduce_window(jnp.ones(x.shape[1:3], x.dtype)[None, :, :, None], 0.0,
                                jax.lax.add, window, strides, "SAME")
  return total / count


def _residual_block(conv: _Convs, named: dict, x, kind: str, index: int, scale: float,
                    activation: bool = True):
  if kind == "block35":
    b0 = conv(x)
    b1 = conv(conv(x))
    b2 = conv(conv(conv(x)))
    branches = [b0, b1, b2]
  else:  # block17: 1x7 then 7x1; block8: 1x3 then 3x1
    b0 = conv(x)
    b1 = conv(conv(conv(x)))
    branches = [b0, b1]
  up = _conv(named[f"{kind}_{index}_conv"], jnp.concatenate(branches, -1), activation=False)
  x = x + up * scale
  return jax.nn.relu(x) if activation else x


def feature_map(params: dict, images: jax.Array) -> jax.Array:
  """Images (B, H, W, 3) -> the final (B, h, w, 1536) map (8 x 8 at 299 x 299)."""
  conv, named = _Convs(params), params["named"]
  x = conv(images, stride=2, padding="VALID")
  x = conv(x, padding="VALID")
  x = conv(x)
  x = _max_pool(x)
  x = conv(x, padding="VALID")
  x = conv(x, padding="VALID")
  x = _max_pool(x)
  # mixed_5b
  b0 = conv(x)
  b1 = conv(conv(x))
  b2 = conv(conv(conv(x)))
  b3 = conv(_avg_pool_same(x))
  x = jnp.concatenate([b0, b1, b2, b3], -1)  # 320 channels
  for kind, repeats, scale in _BLOCKS:
    for index in range(1, repeats + 1):
      last = kind == "block8" and index == repeats
      x = _residual_block(conv, named, x, kind, index, 1.0 if last else scale,
                          activation=not last)
    if kind == "block35":  # mixed_6a
      b0 = conv(x, stride=2, padding="VALID")
      b1 = conv(conv(conv(x)), stride=2, padding="VALID")
      x = jnp.concatenate([b0, b1, _max_pool(x)], -1)  # 1088
    elif kind == "block17":  # mixed_7a
      b0 = conv(conv(x), stride=2, padding="VALID")
      b1 = conv(conv(x), stride=2, padding="VALID")
      b2 = conv(conv(conv(x)), stride=2, padding="VALID")
      x = jnp.concatenate([b0, b1, b2, _max_pool(x)], -1)  # 2080
  return _conv(named["conv_7b"], x)


def features(params: dict, images: jax.Array) -> jax.Array:
  """Images (B, H, W, 3) float32 in [0, 1], H, W >= 75 -> features (B, h * w, 1536)."""
  fmap = feature_map(params, images)
  b, h, w, c = fmap.shape
  return fmap.reshape(b, h * w, c)
