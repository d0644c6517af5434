"""Data parallelism on a 1-D device mesh: where arrays live, and how host rows get there.

The training state lives replicated on every device of the mesh (`NamedSharding(mesh, P())`),
a batch is split on its leading axis over the mesh's one axis, `AXIS` ("data"). Each process
feeds its own rows of the global batch (its data shards' part: `pipeline.TrainBatches`): `global_batch` puts them on this
process's devices, and together the processes' rows make one global array. The steps run
per-device code under `jax.shard_map` on that mesh (steps.py, scst.py).
"""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "data"  # the mesh's one axis: the batch is split over it


def data_mesh(devices=None) -> Mesh:
  """A 1-D mesh over `devices` (default: every device of every process), axis `AXIS`.

  jax.devices() lists each process's devices together, so process i's devices hold the i-th
  block of a global batch: the rows of its data shards.
  """
  return Mesh(np.asarray(devices if devices is not None else jax.devices()), (AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading axis split over the devices; the other axes whole."""
  return NamedSharding(mesh, P(AXIS))


def local_devices(mesh: Mesh) -> int:
  """How many of the mesh's devices this process feeds."""
  return sum(d.process_index == jax.process_index() for d in mesh.devices.flat)


def put_replicated(tree, mesh: Mesh):
  """A copy of `tree` (the same value in every process) on every device of `mesh`."""
  # Through the host: device_put accepts host values for a mesh that spans processes.
  return jax.device_put(jax.device_get(tree), replicated(mesh))


def check_rows(rows: int, devices: int):
  if rows % devices:
    raise ValueError(f"the batch size ({rows}) must be a multiple of the device count "
                     f"({devices})")


def global_batch(tree, mesh: Mesh):
  """This process's rows (leading axis; a multiple of its device count) of each array of
  `tree`, as one global array split over the mesh, rows ordered by process."""
  n = local_devices(mesh)

  def put(rows):
    rows = np.asarray(rows)
    check_rows(rows.shape[0], n)
    return jax.make_array_from_process_local_data(batch_sharding(mesh), rows)

  return jax.tree.map(put, tree)


def process_rows(array: jax.Array) -> np.ndarray:
  """This process's rows of an array split on its leading axis (all of it on one host), in
  order: what `global_batch` was given, for a value computed from it."""
  shards = sorted(array.addressable_shards, key=lambda s: s.index[0].start or 0)
  return np.concatenate([np.asarray(s.data) for s in shards])


def local_copy(tree):
  """The copy of a replicated `tree` on this process's first device (no transfer): for code
  that runs on one device, such as greedy validation."""
  return jax.tree.map(lambda x: x.addressable_data(0), tree)


def gather_rows(local: np.ndarray, counts: Sequence[int]) -> np.ndarray:
  """Every process's rows of `local` in process order, counts[p] of them from process p
  (`local` itself with one process)."""
  if jax.process_count() == 1:
    return local
  padded = np.zeros((max(counts),) + local.shape[1:], local.dtype)
  padded[:len(local)] = local
  every = np.asarray(multihost_utils.process_allgather(padded))
  return np.concatenate([every[p, :c] for p, c in enumerate(counts)])
