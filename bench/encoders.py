"""Images per second of jaxcap's encoder feature functions vs keras.applications.

Weights do not change the speed, so Keras builds its models with weights=None; jaxcap's
MobileNetV2 uses its real weights, its InceptionResNetV2 Keras's random ones unless the
ImageNet file is installed.

    python bench/encoders.py [--quick]
"""

from __future__ import annotations

import functools
import importlib.util
import os
import tempfile

import h5py

import common  # sets sys.path and the Keras backend
from common import row, timeit

import jax
import numpy as np

from jaxcap import encoders

KERAS_MODELS = {"mobilenet_v2": "MobileNetV2", "inception_resnet_v2": "InceptionResNetV2"}
BATCH = 8


def run(quick: bool = False) -> list[dict]:
  import keras  # pylint: disable=g-import-not-at-top
  rows = []
  for name, keras_name in KERAS_MODELS.items():
    if importlib.util.find_spec(f"jaxcap.encoders.{name}") is None:
      rows.append(row(f"encoder {name}", "", 0.0, None, "images/s",
                      note=f"skipped: jaxcap.encoders.{name} not available"))
      continue
    encoder = encoders.get(name)
    size = encoder.IMAGE_SIZE
    model = getattr(keras.applications, keras_name)(
        weights=None, include_top=False, input_shape=(size, size, 3))
    weights = "ImageNet weights"
    try:
      params = encoder.load_params()
    except FileNotFoundError:
      # No ImageNet file here: give both sides Keras's random weights, saved in the
      # layout of the real file.
      from keras.src.legacy.saving import legacy_h5_format  # pylint: disable=g-import-not-at-top
      with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "weights.h5")
        with h5py.File(path, "w") as f:
          legacy_h5_format.save_weights_to_hdf5_group(f, model)
        params = encoder.load_params(path)
      weights = "random weights shared with Keras"
    images = np.random.default_rng(0).random((BATCH, size, size, 3), np.float32)
    ours = jax.jit(functools.partial(encoder.features, params))
    repeat = 2 if quick else 5
    t_ours = timeit(lambda: ours(images), repeat=repeat)
    t_keras = timeit(lambda: model.predict_on_batch(images), repeat=repeat)
    rows.append(row(f"encoder {name} vs keras.applications",
                    f"batch {BATCH}, {size}x{size}, {weights}",
                    BATCH / t_ours, BATCH / t_keras, "images/s"))
  return rows


if __name__ == "__main__":
  common.main(run)
