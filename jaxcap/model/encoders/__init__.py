"""Frozen ImageNet backbones, one module each, all with the same pure-function interface.

Every encoder module defines `NAME`, `IMAGE_SIZE`, `MIN_IMAGE_SIZE`, `FEATURE_DIM`, `GRID`,
`default_weights_path()`, `load_params(path=None)` and `features(params, images)` mapping
images (B, H, W, 3) float32 in [0, 1] to features (B, positions, FEATURE_DIM); each applies
its own input normalisation.
"""

import importlib
import types

NAMES = ("mobilenet_v2", "inception_resnet_v2")


def get(name: str) -> types.ModuleType:
  """The encoder module called `name`."""
  if name not in NAMES:
    raise ValueError(f"unknown encoder {name!r}; choose one of {', '.join(NAMES)}")
  return importlib.import_module(f"jaxcap.model.encoders.{name}")


def image_size(encoder_config) -> int:
  """The input size a config asks for: `encoder.image_size`, or the backbone's standard one."""
  return encoder_config.get("image_size", 0) or get(encoder_config.name).IMAGE_SIZE


def feature_function(encoder: types.ModuleType, params):
  """The jitted images (B, S, S, 3) -> features (B, P, D) of an encoder and its params."""
  import functools  # pylint: disable=g-import-not-at-top

  import jax  # pylint: disable=g-import-not-at-top  (the module stays import-light)
  return jax.jit(functools.partial(encoder.features, params))


def load(encoder_config):
  """(encoder module, its params, `feature_function`) of a config's `encoder` section."""
  encoder = get(encoder_config.name)
  params = encoder.load_params(encoder_config.weights or None)
  return encoder, params, feature_function(encoder, params)
