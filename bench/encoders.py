"""Images per second: jaxcap's encoder feature functions vs `keras.applications`.

jaxcap: `jaxcap.model.encoders.get(name).features(params, images)`, jitted, images (B, H, W, 3)
float32 in [0, 1]. Keras: `keras.applications.<Model>(weights=None, include_top=False)` on
its JAX backend, `predict_on_batch` (Keras's compiled inference path). Weights do not change
the speed, so Keras keeps its random initial weights; jaxcap uses its real ImageNet weights
where installed, else Keras's random ones written to a file in the layout of the real one
(InceptionResNetV2; both share the same weights then). Batch 8 at each backbone's standard
size. A backbone whose jaxcap module is missing or does not import gets a "skipped" row.

    python bench/encoders.py [--quick]
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import jax  # pylint: disable=wrong-import-position,g-import-not-at-top
import numpy as np  # pylint: disable=wrong-import-position,g-import-not-at-top

from bench import common  # pylint: disable=wrong-import-position

KERAS_MODELS = {"mobilenet_v2": "MobileNetV2", "inception_resnet_v2": "InceptionResNetV2"}
STANDARD_SIZE = {"mobilenet_v2": 224, "inception_resnet_v2": 299}
BATCH = 8


def _keras_weights_as_h5(model, path: str) -> None:
  """Saves `model`'s weights in the legacy HDF5 layout keras.applications' files use."""
  import h5py  # pylint: disable=g-import-not-at-top
  from keras.src.legacy.saving import legacy_h5_format  # pylint: disable=g-import-not-at-top
  with h5py.File(path, "w") as f:
    legacy_h5_format.save_weights_to_hdf5_group(f, model)


def _params(encoder, model) -> tuple[object, str]:
  """(jaxcap params, which weights) — the real file if installed, else Keras's."""
  try:
    return encoder.load_params(), "jaxcap ImageNet weights, Keras random weights"
  except FileNotFoundError as missing:
    with tempfile.TemporaryDirectory() as tmp:
      path = os.path.join(tmp, "weights.h5")
      try:
        _keras_weights_as_h5(model, path)
        return encoder.load_params(path), "random weights shared with Keras"
      except Exception as e:  # pylint: disable=broad-except
        raise RuntimeError(f"no weights: {missing}; Keras's could not be loaded: {e}") from e


def run(quick: bool = False) -> list[dict]:
  import keras  # pylint: disable=g-import-not-at-top
  rows = []
  repeat = 3 if quick else 10
  for name, keras_name in KERAS_MODELS.items():
    benchmark = f"encoder {name}: jaxcap vs keras.applications.{keras_name}"
    size = STANDARD_SIZE[name]
    config = f"batch {BATCH}, {size}x{size}, float32"
    try:
      encoder = importlib.import_module(f"jaxcap.model.encoders.{name}")
      size = encoder.IMAGE_SIZE
      config = f"batch {BATCH}, {size}x{size}, float32"
      features = encoder.features
    except Exception as e:  # pylint: disable=broad-except
      rows.append(common.skipped(benchmark, config,
                                 f"jaxcap.model.encoders.{name} not available ({type(e).__name__})"))
      continue
    model = getattr(keras.applications, keras_name)(
        weights=None, include_top=False, input_shape=(size, size, 3))
    try:
      params, weights = _params(encoder, model)
    except RuntimeError as e:
      rows.append(common.skipped(benchmark, config, str(e)[:200]))
      continue
    images = np.random.default_rng(0).random((BATCH, size, size, 3), np.float32)
    ours_fn = jax.jit(features)
    ours_out = jax.block_until_ready(ours_fn(params, images))  # compiles
    keras_out = model.predict_on_batch(images)
    t = common.interleaved({"ours": lambda: ours_fn(params, images),  # pylint: disable=cell-var-from-loop
                            "keras": lambda: model.predict_on_batch(images)},  # pylint: disable=cell-var-from-loop
                           repeat=repeat, warmup=1)
    rows.append(common.row(
        benchmark, f"{config}, {weights}", BATCH / t["ours"], BATCH / t["keras"], "images/s",
        note=f"features {tuple(ours_out.shape)} vs Keras {tuple(np.shape(keras_out))}"))
  return rows


if __name__ == "__main__":
  common.main(run)
