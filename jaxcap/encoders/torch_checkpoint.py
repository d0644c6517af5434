"""Reads a PyTorch state_dict file into numpy arrays, without torch and without pickle code.

A torch checkpoint is a pickle, and unpickling runs whatever callables the file names. Here
an allow-list unpickler accepts only what a plain state_dict needs (an OrderedDict, the
tensor-rebuild function and the storage types), each mapped to an inert stand-in; any other
global, `os.system` say, is refused before anything runs. Both torch layouts are read: the
legacy one (pickles followed by raw storages) and the zip one (torch >= 1.6).
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile

import numpy as np

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": None,  # no numpy bfloat16; refused with a clear error below
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class CheckpointError(ValueError):
  """Not a torch state_dict we can read safely; the message names the file."""


class _StorageType:
  def __init__(self, name):
    self.name = name


class _Storage:
  """A storage referenced by the pickle; its bytes are filled in afterwards."""

  def __init__(self, dtype, key, numel):
    self.dtype, self.key, self.numel = dtype, key, numel
    self.array = None


class _TensorRef:
  def __init__(self, storage, offset, size, stride):
    self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

  def to_numpy(self) -> np.ndarray:
    base = self.storage.array
    item = base.itemsize
    view = np.lib.stride_tricks.as_strided(
        base[self.offset:], shape=self.size, strides=[s * item for s in self.stride])
    return np.array(view)  # own the memory, in C order


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
  return _TensorRef(storage, storage_offset, size, stride)


def _allowed_global(module: str, name: str):
  if (module, name) == ("collections", "OrderedDict"):
    return collections.OrderedDict
  if (module, name) in (("torch._utils", "_rebuild_tensor_v2"),
                        ("torch._utils", "_rebuild_tensor")):
    return _rebuild_tensor
  if module == "torch" and name in _STORAGE_DTYPES:
    return _StorageType(name)
  return None


class _SafeUnpickler(pickle.Unpickler):
  """An Unpickler that resolves only the allow-listed globals and collects storages."""

  def __init__(self, file, path, storages, zip_loader=None):
    super().__init__(file)
    self._path, self._storages, self._zip_loader = path, storages, zip_loader

  def find_class(self, module, name):
    found = _allowed_global(module, name)
    if found is None:
      raise CheckpointError(
          f"{self._path}: refusing to load: the file references {module}.{name}, which a "
          f"plain state_dict never needs (only tensors and dicts are allowed)")
    return found

  def persistent_load(self, pid):
    # Legacy: ('storage', type, key, location, numel, view); zip: ('storage', type, key,
    # location, numel).
    if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
      raise CheckpointError(f"{self._path}: unexpected persistent id {pid!r}")
    storage_type, key, numel = pid[1], str(pid[2]), int(pid[4])
    if not isinstance(storage_type, _StorageType):
      raise CheckpointError(f"{self._path}: bad storage type {storage_type!r}")
    dtype = _STORAGE_DTYPES[storage_type.name]
    if dtype is None:
      raise CheckpointError(f"{self._path}: {storage_type.name} tensors are not supported")
    if key not in self._storages:
      self._storages[key] = _Storage(np.dtype(dtype), key, numel)
      if self._zip_loader is not None:
        self._storages[key].array = self._zip_loader(key, np.dtype(dtype))
    return self._storages[key]


def _plain_load(f, path):
  """A pickle with no globals at all (the legacy header records)."""
  return _SafeUnpickler(f, path, {}).load()


def _materialize(obj, path):
  if isinstance(obj, _TensorRef):
    if obj.storage.array is None:
      raise CheckpointError(f"{path}: storage {obj.storage.key} has no data")
    return obj.to_numpy()
  if isinstance(obj, dict):
    return {str(k): _materialize(v, path) for k, v in obj.items()}
  if isinstance(obj, (int, float, str)):
    return obj
  raise CheckpointError(f"{path}: unexpected object {type(obj).__name__} in the state_dict")


def _load_legacy(f, path):
  if _plain_load(f, path) != _LEGACY_MAGIC:
    raise CheckpointError(f"{path}: not a torch checkpoint (bad magic number)")
  _plain_load(f, path)  # protocol version
  _plain_load(f, path)  # sys info
  storages: dict[str, _Storage] = {}
  result = _SafeUnpickler(f, path, storages).load()
  keys = _plain_load(f, path)
  for key in keys:
    storage = storages[str(key)]
    (numel,) = struct.unpack("<q", f.read(8))
    data = f.read(numel * storage.dtype.itemsize)
    if numel != storage.numel or len(data) != numel * storage.dtype.itemsize:
      raise CheckpointError(f"{path}: truncated data for storage {key}")
    storage.array = np.frombuffer(data, dtype=storage.dtype.newbyteorder("<"))
  return result


def _load_zip(path):
  with zipfile.ZipFile(path) as archive:
    names = archive.namelist()
    pickles = [n for n in names if n.endswith("/data.pkl")]
    if len(pickles) != 1:
      raise CheckpointError(f"{path}: a zip without exactly one data.pkl")
    prefix = pickles[0][: -len("data.pkl")]

    def load_storage(key, dtype):
      return np.frombuffer(archive.read(f"{prefix}data/{key}"), dtype=dtype.newbyteorder("<"))

    with archive.open(pickles[0]) as f:
      return _SafeUnpickler(io.BytesIO(f.read()), path, {}, load_storage).load()


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """A torch `state_dict` file -> {name: numpy array}, safely (see the module docstring)."""
  path = os.fspath(path)
  try:
    if zipfile.is_zipfile(path):
      result = _load_zip(path)
    else:
      with open(path, "rb") as f:
        result = _load_legacy(f, path)
  except CheckpointError:
    raise
  except FileNotFoundError:
    raise
  except (pickle.UnpicklingError, EOFError, struct.error, KeyError, TypeError, ValueError,
          IndexError, zipfile.BadZipFile) as e:
    raise CheckpointError(f"{path}: not a readable torch checkpoint ({e})") from None
  if not isinstance(result, dict):
    raise CheckpointError(f"{path}: holds a {type(result).__name__}, not a state_dict")
  return _materialize(result, path)
