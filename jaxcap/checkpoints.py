"""Checkpoints in `<workdir>/checkpoints`, written with orbax.

Each step directory holds the train state (parameters, optimizer state, step), the data RNG
key, and a JSON record of the config, the model sizes and the vocabulary, so a checkpoint
is enough to caption images with. Orbax writes each checkpoint into a temporary directory
and renames it only when complete, so a process killed mid-save leaves the previous
checkpoint as the latest one, never a half-written one.

Old checkpoints are dropped the same way: orbax would delete a step directory in place, file
by file, and a kill during that leaves a step that lists but cannot be restored. So orbax is
told to move them into `<kind>/deleting/` (one atomic rename), and this module empties that
folder; nothing there is ever read.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxcap import decoders
from jaxcap.text import Vocabulary


class CheckpointMismatchError(ValueError):
  """The checkpoint in a workdir was trained with another vocabulary or model shape."""


LATEST, BEST = "checkpoints", "best"
_DELETING = "deleting"


def _remove_tree(path: str) -> None:
  shutil.rmtree(path, ignore_errors=True)


class Checkpoints:
  """Save / restore / resume for one workdir.

  `kind` picks the folder: LATEST ("checkpoints", the last few, for resuming) or BEST
  ("best", the best by validation CIDEr).
  """

  def __init__(self, workdir: str | os.PathLike, max_to_keep: int = 3, read_only=False,
               kind: str = LATEST):
    self.directory = os.path.join(os.path.abspath(workdir), kind)
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=not read_only, read_only=read_only,
            cleanup_tmp_directories=not read_only,
            # Orbax names its cross-process barriers after the step; without a prefix, the
            # LATEST and BEST managers saving the same step in a multi-host run share a
            # barrier and abort ("Barrier _async_commit_complete.6 is already ongoing").
            multiprocessing_options=ocp.options.MultiprocessingOptions(
                barrier_sync_key_prefix=kind),
            todelete_subdir=_DELETING),
    )
    self._read_only = read_only
    self._purge_deleted()

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, rng: jax.Array, meta: dict) -> None:
    """Starts writing `state` (a pytree on host or one device) in the background."""
    self._manager.save(
        int(step),
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            rng=ocp.args.ArraySave(np.asarray(jax.random.key_data(rng))),
            meta=ocp.args.JsonSave(meta),
        ),
        force=True,
    )
    self._purge_deleted()  # what the previous save moved aside (orbax waited for it above)

  def restore_meta(self, step: int | None = None) -> dict:
    """The JSON record (config, sizes, vocabulary) of a checkpoint, without any arrays."""
    step = self._require_step(step)
    return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))[
        "meta"]

  def restore(self, template_state: Any, step: int | None = None) -> tuple[Any, jax.Array]:
    """(state shaped like `template_state`, rng key) of the given or latest checkpoint."""
    step = self._require_step(step)
    restored = self._manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(template_state), rng=ocp.args.ArrayRestore()),
    )
    return restored["state"], jax.random.wrap_key_data(restored["rng"])

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()
    self._purge_deleted()

  def _purge_deleted(self) -> None:
    """Removes the old checkpoints orbax moved to `deleting/`; one process does it."""
    folder = os.path.join(self.directory, _DELETING)
    if self._read_only or jax.process_index() != 0 or not os.path.isdir(folder):
      return
    for name in os.listdir(folder):
      _remove_tree(os.path.join(folder, name))

  def _require_step(self, step):
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    return step


def make_meta(config_dict: dict, spec: decoders.DecoderSpec, vocab: Vocabulary,
              encoder: str) -> dict:
  return {"config": config_dict, "spec": spec.to_dict(), "encoder": encoder,
          "vocab": vocab.tokens}


def check_compatible(meta: dict, *, spec: decoders.DecoderSpec, vocab: Vocabulary,
                     encoder: str, where: str) -> None:
  """Raises CheckpointMismatchError in plain words if the run and the checkpoint differ."""
  problems = []
  if meta["encoder"] != encoder:
    problems.append(f"encoder: checkpoint {meta['encoder']!r}, config {encoder!r}")
  saved, now = decoders.spec_from_meta(meta).to_dict(), spec.to_dict()
  if saved["kind"] != now["kind"]:
    problems.append(f"decoder: checkpoint {saved['kind']!r}, config {now['kind']!r} "
                    f"(model.decoder)")
  else:
    for key in sorted(saved):
      if saved[key] != now[key]:
        problems.append(f"{key}: checkpoint {saved[key]}, config {now[key]}")
  if meta["vocab"] != vocab.tokens:
    saved, now = meta["vocab"], vocab.tokens
    first = next((i for i, (a, b) in enumerate(zip(saved, now)) if a != b),
                 min(len(saved), len(now)))
    problems.append(
        f"vocabulary: checkpoint has {len(saved)} tokens, this data gives {len(now)}; "
        f"first difference at id {first} "
        f"({saved[first] if first < len(saved) else '-'!r} vs "
        f"{now[first] if first < len(now) else '-'!r})")
  if problems:
    raise CheckpointMismatchError(
        f"the checkpoint in {where} does not match this run's config:\n  - "
        + "\n  - ".join(problems)
        + "\nUse a new --workdir, or the config and data the checkpoint was trained with.")
