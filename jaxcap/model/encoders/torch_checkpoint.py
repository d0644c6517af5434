"""Reads a PyTorch state_dict file into numpy arrays, without torch and without pickle code.

A torch checkpoint is a pickle, and unpickling runs whatever callables the file names. Here
an allow-list unpickler accepts only what a plain state_dict needs (an OrderedDict, the
tensor-rebuild function and the storage types), each mapped to an inert stand-in; any other
global, `os.system` say, is refused before anything runs. Both torch layouts are read: the
legacy one (pickles followed by raw storages) and the zip one (torch >= 1.6).

Sizes in the file are not trusted either: every storage's length is checked against the
bytes that hold it before they are read, and every tensor's offset, shape and strides
against its storage before it is viewed, so a crafted file is refused with an error rather
than reading past a buffer (a segfault, or heap bytes passed off as weights).
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


def _is_count(x) -> bool:
  return isinstance(x, int) and not isinstance(x, bool) and x >= 0


class _TensorRef:
  def __init__(self, storage, offset, size, stride):
    self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

  def check(self) -> str | None:
    """Why this tensor cannot be a view of its storage, or None if it can."""
    if not isinstance(self.storage, _Storage):
      return f"its storage is a {type(self.storage).__name__}"
    if not (isinstance(self.size, tuple) and isinstance(self.stride, tuple)
            and len(self.size) == len(self.stride) and len(self.size) <= 32
            and all(map(_is_count, self.size + self.stride)) and _is_count(self.offset)):
      # torch writes both as tuples of ints
      return (f"bad offset {self.offset!r}, shape {self.size!r} or strides {self.stride!r} "
              "(non-negative integers, one stride per dimension)")
    length = len(self.storage.array)
    numel = int(np.prod(self.size, dtype=object))
    # One past the last element read; an empty tensor reads nothing.
    end = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride)) + 1
    if numel and end > length:
      return (f"shape {self.size} with strides {self.stride} at offset {self.offset} reaches "
              f"element {end - 1} of a storage of {length}")
    if numel > max(length, 1) or self.offset > length:
      # Overlapping (zero-stride) views could otherwise make a file of a few bytes allocate
      # terabytes; no saved weight needs them.
      return f"{numel} elements from a storage of {length}"
    return None

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
    storage_type, key, numel = pid[1], str(pid[2]), pid[4]
    if not _is_count(numel):
      raise CheckpointError(f"{self._path}: storage {key} has a bad size {numel!r}")
    if not isinstance(storage_type, _StorageType):
      raise CheckpointError(f"{self._path}: bad storage type {storage_type!r}")
    dtype = _STORAGE_DTYPES[storage_type.name]
    if dtype is None:
      raise CheckpointError(f"{self._path}: {storage_type.name} tensors are not supported")
    if key not in self._storages:
      self._storages[key] = _Storage(np.dtype(dtype), key, numel)
      if self._zip_loader is not None:
        self._storages[key].array = self._zip_loader(key, np.dtype(dtype), numel)
    storage = self._storages[key]
    if (storage.dtype, storage.numel) != (np.dtype(dtype), numel):
      raise CheckpointError(f"{self._path}: storage {key} is referenced with two types or "
                            "sizes")
    return storage


def _plain_load(f, path):
  """A pickle with no globals at all (the legacy header records)."""
  return _SafeUnpickler(f, path, {}).load()


def _materialize(obj, path, name="the state_dict", depth=0):
  if isinstance(obj, _TensorRef):
    if isinstance(obj.storage, _Storage) and obj.storage.array is None:
      raise CheckpointError(f"{path}: storage {obj.storage.key} has no data")
    problem = obj.check()
    if problem:
      raise CheckpointError(f"{path}: tensor {name} is not a view of its storage: {problem}")
    return obj.to_numpy()
  if isinstance(obj, dict):
    if depth > 8:  # {"state_dict": {...}} is as deep as real files go
      raise CheckpointError(f"{path}: dicts nested more than 8 deep")
    return {str(k): _materialize(v, path, str(k), depth + 1) for k, v in obj.items()}
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
  file_size = os.fstat(f.fileno()).st_size
  for key in keys:
    storage = storages[str(key)]
    (numel,) = struct.unpack("<q", f.read(8))
    if numel != storage.numel or numel * storage.dtype.itemsize > file_size - f.tell():
      raise CheckpointError(f"{path}: storage {key}: {numel} elements declared, "
                            f"{storage.numel} referenced, more than the file holds")
    data = f.read(numel * storage.dtype.itemsize)
    if len(data) != numel * storage.dtype.itemsize:
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

    def load_storage(key, dtype, numel):
      name = f"{prefix}data/{key}"
      # Size from the zip directory before reading: a record can claim any length.
      if archive.getinfo(name).file_size != numel * dtype.itemsize:
        raise CheckpointError(f"{path}: storage {key} holds "
                              f"{archive.getinfo(name).file_size} bytes, not {numel} x "
                              f"{dtype.itemsize}")
      return np.frombuffer(archive.read(name), dtype=dtype.newbyteorder("<"))

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
