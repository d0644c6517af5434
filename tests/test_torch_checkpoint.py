"""The torch state_dict reader on crafted files: every size in the file is checked before
any bytes are viewed, so a hostile file is a clean error, never a crash or heap bytes."""

import collections
import io
import pickle
import struct
import sys
import types
import zipfile

import numpy as np
import pytest

from jaxcap.model.encoders import torch_checkpoint


class FloatStorage:  # pickled by reference as torch.FloatStorage
  pass


def _rebuild_tensor_v2(*args):  # pickled by reference as torch._utils._rebuild_tensor_v2
  del args


FloatStorage.__module__ = "torch"
_rebuild_tensor_v2.__module__ = "torch._utils"


class StorageRef:
  def __init__(self, key, numel):
    self.key, self.numel = key, numel


class Tensor:
  """What torch pickles for a tensor: a storage, an offset, a shape and strides."""

  def __init__(self, storage, offset, size, stride):
    self.args = storage, offset, size, stride

  def __reduce__(self):
    return _rebuild_tensor_v2, self.args + (False, collections.OrderedDict())


@pytest.fixture(autouse=True)
def fake_torch(monkeypatch):
  """Just enough of a `torch` module for pickle to name its globals when writing."""
  torch = types.ModuleType("torch")
  torch.FloatStorage = FloatStorage
  utils = types.ModuleType("torch._utils")
  utils._rebuild_tensor_v2 = _rebuild_tensor_v2
  torch._utils = utils
  monkeypatch.setitem(sys.modules, "torch", torch)
  monkeypatch.setitem(sys.modules, "torch._utils", utils)


def write(path, state, storages, layout):
  """A torch checkpoint file in the legacy or the zip layout; `storages`: {key: float32
  array}; the StorageRef numels in `state` are what the file claims."""
  legacy = layout == "legacy"

  class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
      if isinstance(obj, StorageRef):
        return ("storage", FloatStorage, obj.key, "cpu", obj.numel) + ((None,) if legacy else ())
      return None

  payload = io.BytesIO()
  Pickler(payload, protocol=2).dump(state)
  if legacy:
    with open(path, "wb") as f:
      for record in (0x1950A86A20F9469CFC6C, 1001, {}):
        pickle.dump(record, f, protocol=2)
      f.write(payload.getvalue())
      pickle.dump(list(storages), f, protocol=2)
      for array in storages.values():
        f.write(struct.pack("<q", array.size) + array.astype("<f4").tobytes())
  else:
    with zipfile.ZipFile(path, "w") as archive:
      archive.writestr("archive/data.pkl", payload.getvalue())
      for key, array in storages.items():
        archive.writestr(f"archive/data/{key}", array.astype("<f4").tobytes())


FOUR = np.arange(4, dtype=np.float32)
LAYOUTS = ["legacy", "zip"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_plain_state_dict_reads_back(tmp_path, layout):
  weights = np.arange(12, dtype=np.float32)
  s = StorageRef("0", 12)
  state = collections.OrderedDict(
      w=Tensor(s, 0, (3, 4), (4, 1)), t=Tensor(s, 0, (4, 3), (1, 4)),  # a transposed view
      tail=Tensor(s, 10, (2,), (1,)), empty=Tensor(s, 12, (0,), (1,)))
  write(tmp_path / "ok.pth", state, {"0": weights}, layout)
  got = torch_checkpoint.load_state_dict(tmp_path / "ok.pth")
  np.testing.assert_array_equal(got["w"], weights.reshape(3, 4))
  np.testing.assert_array_equal(got["t"], weights.reshape(3, 4).T)
  np.testing.assert_array_equal(got["tail"], [10, 11])
  assert got["empty"].shape == (0,)


BAD_VIEWS = {  # name -> (offset, size, stride, expected message)
    "50M over 4": (0, (50_000_000,), (1,), "reaches element 49999999 of a storage of 4"),
    "heap bytes": (0, (64,), (1,), "reaches element 63 of a storage of 4"),
    "offset past end": (3, (2,), (1,), "reaches element 4 of a storage of 4"),
    "far offset, empty": (10**12, (0,), (1,), "0 elements from a storage of 4"),
    "strided past end": (0, (2, 2), (3, 1), "reaches element 4"),
    "negative stride": (3, (4,), (-1,), "non-negative integers"),
    "negative size": (0, (-1,), (1,), "non-negative integers"),
    "negative offset": (-2, (2,), (1,), "non-negative integers"),
    "stride count": (0, (2, 2), (1,), "one stride per dimension"),
    "float shape": (0, (2.0,), (1,), "non-negative integers"),
    "zero stride": (0, (10**6, 10**6), (0, 0), "1000000000000 elements from a storage of 4"),
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", BAD_VIEWS)
def test_views_outside_the_storage_are_refused(tmp_path, layout, case):
  offset, size, stride, message = BAD_VIEWS[case]
  state = {"weight": Tensor(StorageRef("0", 4), offset, size, stride)}
  write(tmp_path / "evil.pth", state, {"0": FOUR}, layout)
  with pytest.raises(torch_checkpoint.CheckpointError, match="evil.pth: tensor weight") as e:
    torch_checkpoint.load_state_dict(tmp_path / "evil.pth")
  assert message in str(e.value)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_storage_claiming_more_than_the_file_holds(tmp_path, layout):
  state = {"weight": Tensor(StorageRef("0", 10**12), 0, (10**12,), (1,))}
  write(tmp_path / "big.pth", state, {"0": FOUR}, layout)
  with pytest.raises(torch_checkpoint.CheckpointError, match="big.pth: storage 0"):
    torch_checkpoint.load_state_dict(tmp_path / "big.pth")


def test_storage_with_two_sizes(tmp_path):
  state = {"a": Tensor(StorageRef("0", 4), 0, (4,), (1,)),
           "b": Tensor(StorageRef("0", 100), 0, (100,), (1,))}
  write(tmp_path / "two.pth", state, {"0": FOUR}, "zip")
  with pytest.raises(torch_checkpoint.CheckpointError, match="two types or sizes"):
    torch_checkpoint.load_state_dict(tmp_path / "two.pth")


def test_encoder_weights_from_a_workdir_get_the_same_checks(tmp_path):
  # sample.py and evaluate.py read `encoder.weights` from a workdir's checkpoint metadata
  # and load it with this same function, as train.py does.
  from jaxcap.model.encoders import mobilenet_v2  # pylint: disable=g-import-not-at-top
  write(tmp_path / "evil.pth", {"features.0.0.weight": Tensor(StorageRef("0", 4), 0,
                                                              (50_000_000,), (1,))},
        {"0": FOUR}, "zip")
  with pytest.raises(torch_checkpoint.CheckpointError, match="evil.pth: tensor features"):
    mobilenet_v2.load_params(tmp_path / "evil.pth")


def test_deep_nesting_is_refused(tmp_path):
  state = {}
  for _ in range(50):
    state = {"x": state}
  write(tmp_path / "deep.pth", state, {}, "zip")
  with pytest.raises(torch_checkpoint.CheckpointError, match="deep.pth: dicts nested"):
    torch_checkpoint.load_state_dict(tmp_path / "deep.pth")
