"""InceptionResNetV2 against keras.applications with the same (random) weights."""

import h5py
import jax
import numpy as np
import pytest

from jaxcap.model.encoders import inception_resnet_v2 as irv2

# 139 px gives a 3x3 grid (299 px: 8x8), so positions in the wrong order would differ; at the
# smallest size, 75 px, the grid is 1x1 and the order could not be seen.
SIZE = 139


@pytest.fixture(scope="module")
def keras_model_and_file(tmp_path_factory):
  import keras
  from keras.src.legacy.saving import legacy_h5_format
  model = keras.applications.InceptionResNetV2(weights=None, include_top=False,
                                               input_shape=(SIZE, SIZE, 3))
  rng = np.random.default_rng(0)
  for layer in model.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
      beta, mean, var = layer.get_weights()  # scale=False: no gamma
      layer.set_weights([rng.normal(0, 0.2, beta.shape).astype(np.float32),
                         rng.normal(0, 0.2, mean.shape).astype(np.float32),
                         rng.uniform(0.5, 2.0, var.shape).astype(np.float32)])
  path = tmp_path_factory.mktemp("weights") / irv2.WEIGHTS_FILENAME
  with h5py.File(path, "w") as f:  # the layout of Keras's downloadable weights files
    legacy_h5_format.save_weights_to_hdf5_group(f, model)
  return model, path


@pytest.mark.slow
def test_features_equal_keras(keras_model_and_file):
  model, path = keras_model_and_file
  params = irv2.load_params(path)
  images = np.random.default_rng(1).random((2, SIZE, SIZE, 3), np.float32)
  expected = np.asarray(model.predict_on_batch(images))  # (2, 3, 3, 1536)
  assert expected.shape[1:3] == (3, 3)
  with jax.default_matmul_precision("highest"):
    got = jax.jit(irv2.features)(params, images)
  assert got.shape == (2, expected.shape[1] * expected.shape[2], irv2.FEATURE_DIM)
  np.testing.assert_allclose(got, expected.reshape(got.shape), atol=1e-4, rtol=0)
  assert np.abs(expected).max() > 0.1  # a meaningful comparison, not zeros
  # ... and one that sees the grid order: the positions differ from each other, and from the
  # column-major order, by far more than the tolerance.
  columns_first = expected.transpose(0, 2, 1, 3).reshape(got.shape)
  assert np.abs(columns_first - expected.reshape(got.shape)).max() > 100 * 1e-4


def test_missing_weights_file_says_what_and_where(tmp_path, monkeypatch):
  monkeypatch.setenv("JAXCAP_WEIGHTS_DIR", str(tmp_path))
  with pytest.raises(FileNotFoundError) as info:
    irv2.load_params()
  message = str(info.value)
  assert irv2.WEIGHTS_FILENAME in message and str(tmp_path) in message
  assert "storage.googleapis.com" in message


def test_not_a_weights_file(tmp_path):
  path = tmp_path / "x.h5"
  with h5py.File(path, "w") as f:
    f.create_dataset("nothing", data=np.zeros(3))
  with pytest.raises(ValueError, match="not a Keras HDF5 weights file"):
    irv2.load_params(path)
