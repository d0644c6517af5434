"""MobileNetV2 with the real ImageNet weights, read without torch or pickle code."""

import pickle

import jax
import numpy as np
import pytest
import skimage.data

from jaxcap.data import image_files
from jaxcap.model.encoders import mobilenet_v2, torch_checkpoint

ESPRESSO_OR_CUP = {967, 968, 504}  # espresso, cup, coffee mug
CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def params():
  return mobilenet_v2.load_params()


def photo(name):
  return image_files.resize(getattr(skimage.data, name)(), mobilenet_v2.IMAGE_SIZE)


@pytest.mark.slow
def test_real_weights_classify_real_photos(params):
  batch = np.stack([photo("coffee"), photo("chelsea")])
  top1 = np.asarray(jax.jit(mobilenet_v2.classify)(params, batch)).argmax(-1)
  assert top1[0] in ESPRESSO_OR_CUP, top1
  assert top1[1] in CATS, top1


@pytest.mark.slow
def test_features_shape_and_consistency_with_classifier(params):
  batch = np.stack([photo("astronaut"), photo("rocket")])
  feats = jax.jit(mobilenet_v2.features)(params, batch)
  assert feats.shape == (2, 49, 1280)
  logits = feats.mean(axis=1) @ params["classifier"]["kernel"] + params["classifier"]["bias"]
  np.testing.assert_allclose(logits, mobilenet_v2.classify(params, batch), atol=1e-3)
  assert (np.asarray(feats) >= 0).all() and (np.asarray(feats) <= 6).all()  # ReLU6 output


@pytest.mark.slow
def test_depthwise_matches_grouped_convolution(params):
  block = params["blocks"][3]["depthwise"]
  x = jax.random.normal(jax.random.key(0), (2, 14, 14, block["kernel"].shape[-1]))
  for stride in (1, 2):
    reference = jax.lax.conv_general_dilated(
        x, block["kernel"], (stride, stride), ((1, 1), (1, 1)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=x.shape[-1]) + block["bias"]
    np.testing.assert_allclose(mobilenet_v2._depthwise3x3(block, x, stride), reference,
                               atol=1e-4)


class _Evil:
  def __reduce__(self):
    import os
    return (os.system, ("touch PWNED_BY_PICKLE",))


def test_unpickler_refuses_code(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  path = tmp_path / "evil.pth"
  with open(path, "wb") as f:  # the legacy layout: magic, version, sys info, payload
    for record in (0x1950A86A20F9469CFC6C, 1001, {}):
      pickle.dump(record, f, protocol=2)
    pickle.dump({"weight": _Evil()}, f, protocol=2)
  with pytest.raises(torch_checkpoint.CheckpointError, match="posix.system|os.system"):
    torch_checkpoint.load_state_dict(path)
  assert not (tmp_path / "PWNED_BY_PICKLE").exists()


def test_not_a_checkpoint(tmp_path):
  path = tmp_path / "notes.pth"
  path.write_text("these are not weights")
  with pytest.raises(torch_checkpoint.CheckpointError, match="notes.pth"):
    torch_checkpoint.load_state_dict(path)


def test_missing_weights_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="nothing.pth"):
    mobilenet_v2.load_params(tmp_path / "nothing.pth")
