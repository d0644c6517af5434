"""jaxcap.compat: the old module paths, the public surface, and each pre-release shim
(checkpoints with one `state` item, configs with a `sample` section or without
`encoder.resize`)."""

import importlib
import subprocess
import sys

import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

import jaxcap
from jaxcap import compat
from jaxcap.data import image_files
from jaxcap.decoding.options import DecodeOptions
from jaxcap.training import checkpoints

# The paths the README documented before the move, with a name each must still offer.
DOCUMENTED = {
    "jaxcap.decoders": "DecoderSpec", "jaxcap.decoding": "DecodeOptions",
    "jaxcap.training": "loss", "jaxcap.inference": "Captioner",
    "jaxcap.encoders.mobilenet_v2": "load_params"}


@pytest.mark.parametrize("old", sorted(compat.MODULE_ALIASES))
def test_old_module_path_is_the_new_module(old):
  new = importlib.import_module(compat.MODULE_ALIASES[old])
  assert importlib.import_module(old) is new
  assert sys.modules[old] is new
  parent, _, name = old.rpartition(".")
  assert getattr(importlib.import_module(parent), name) is new  # `from parent import name`


def test_documented_old_paths_keep_their_names():
  assert set(DOCUMENTED) - {"jaxcap.decoding", "jaxcap.training"} <= set(compat.MODULE_ALIASES)
  for old, name in DOCUMENTED.items():
    assert hasattr(importlib.import_module(old), name), old
  from jaxcap import decoders, decoding, training  # pylint: disable=g-import-not-at-top
  from jaxcap.encoders import mobilenet_v2  # pylint: disable=g-import-not-at-top
  assert decoding.decode is importlib.import_module("jaxcap.decoding.loop").decode
  assert training.loss is importlib.import_module("jaxcap.training.steps").loss
  assert decoders is importlib.import_module("jaxcap.model.decoders")
  assert mobilenet_v2 is importlib.import_module("jaxcap.model.encoders.mobilenet_v2")


def test_public_surface():
  from jaxcap import Captioner, DecodeOptions as Options, DecoderSpec, decode, decoders  # pylint: disable=g-import-not-at-top
  assert Captioner is importlib.import_module("jaxcap.captioner").Captioner
  assert Options is DecodeOptions
  assert DecoderSpec is decoders.DecoderSpec
  assert decode is importlib.import_module("jaxcap.decoding.loop").decode
  assert set(jaxcap.__all__) <= set(dir(jaxcap))
  with pytest.raises(AttributeError, match="no attribute 'nothing'"):
    jaxcap.nothing  # pylint: disable=pointless-statement


@pytest.mark.parametrize("statement", ["import jaxcap", "import jaxcap.decoding.options",
                                       "from jaxcap.decoding import options"])
def test_light_imports_load_no_jax(statement):
  # A fresh interpreter: this one has long imported JAX.
  code = (f"import sys; {statement}; "
          "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'flax')))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True, timeout=120).stdout
  assert out.strip() == "[]"


def _state(step):
  return {"w": np.full((4, 4), float(step), np.float32), "b": np.arange(3.0) + step}


def test_checkpoint_with_one_state_item_restores(tmp_path):
  # What jaxcap wrote before params had their own item: one "state" item (step, params,
  # opt_state) and an "rng".
  manager = ocp.CheckpointManager(tmp_path / checkpoints.LATEST)
  legacy = {"step": np.int32(7), "params": _state(7), "opt_state": _state(-7)}
  manager.save(7, args=ocp.args.Composite(**{
      compat.LEGACY_STATE_ITEM: ocp.args.StandardSave(legacy),
      "rng": ocp.args.ArraySave(np.zeros(2, np.uint32)), "meta": ocp.args.JsonSave({})}))
  manager.wait_until_finished()
  manager.close()
  reader = checkpoints.Checkpoints(tmp_path, read_only=True)
  assert compat.is_legacy_state_checkpoint(reader.step_dir(7))
  np.testing.assert_array_equal(reader.restore_params(7)["w"], _state(7)["w"])
  params, opt_state = reader.restore_training(7, _state(0), _state(0))
  np.testing.assert_array_equal(params["b"], _state(7)["b"])
  np.testing.assert_array_equal(opt_state["b"], _state(-7)["b"])
  # Today's layout is not taken for the old one.
  writer = checkpoints.Checkpoints(tmp_path / "new")
  writer.save(1, {}, params=_state(1), opt_state=_state(-1))
  writer.close()
  assert not compat.is_legacy_state_checkpoint(writer.step_dir(1))


@pytest.mark.parametrize("greedy, want", [
    (True, DecodeOptions("greedy", top_k=5, temperature=0.5)),
    (False, DecodeOptions("sample", top_k=5, temperature=0.5))])
def test_config_with_a_sample_section(greedy, want):
  old = ml_collections.ConfigDict(
      {"sample": {"greedy": greedy, "top_k": 5, "temperature": 0.5}})
  assert DecodeOptions.from_config(old) == want
  new = ml_collections.ConfigDict({"decoding": {"method": "beam", "beam_size": 4},
                                   "sample": {"greedy": True, "top_k": 5, "temperature": 0.5}})
  assert DecodeOptions.from_config(new) == DecodeOptions("beam", beam_size=4)


def test_encoder_config_without_resize():
  old = ml_collections.ConfigDict({"name": "mobilenet_v2"})
  assert image_files.resize_method_of(old) == compat.RESIZE_BEFORE_ENCODER_RESIZE
  assert compat.RESIZE_BEFORE_ENCODER_RESIZE == "pil_bilinear"  # what jaxcap did then
  old.resize = "tf_bilinear"
  assert image_files.resize_method_of(old) == "tf_bilinear"
  old.resize = "bicubic"
  with pytest.raises(ValueError, match="unknown resize method 'bicubic'"):
    image_files.resize_method_of(old)
