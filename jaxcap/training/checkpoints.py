"""Checkpoints in `<workdir>/checkpoints` (for resuming) and `<workdir>/best`, with orbax.

Each step directory holds three items: `params` (the decoder parameters, all that captioning
needs), `opt_state` (the optimizer state, for resuming) and `meta` (a JSON record of the
config, the model description and the vocabulary), so a checkpoint is enough to caption
images with. A run with `train.ema_decay` adds a fourth, `ema_params` (the parameters'
moving average), which is what `restore_params` gives readers to caption with; in best/ the
average is saved as `params` itself. There is no RNG state to save: initialisation, batches and dropout are functions
of `config.seed` and the step, so a resumed run continues exactly as if never stopped.

Crash safety. Orbax writes each checkpoint into a temporary directory and renames it only
when complete, so a process killed mid-save leaves the previous checkpoint as the latest one,
never a half-written one. Old checkpoints are dropped the same way: orbax would delete a step
directory in place, file by file, and a kill during that leaves a step that lists but cannot
be restored. So orbax is told to move them into `<kind>/deleting/` (one atomic rename), and
this module empties that folder; nothing there is ever read.

A checkpoint that is damaged all the same (a truncated or missing file) is skipped, newest
first, with one line on stderr saying which step and why (`newest_readable`); a trainer moves
it into `<kind>/unreadable/` so that it can save that step again, and never deletes it. When
no checkpoint restores, nothing is moved: that is more likely code that cannot read them
than damage to all of them.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
from typing import Any, Callable, Sequence, TypeVar

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import path as ocp_path

from jaxcap import compat
from jaxcap.data.text import Vocabulary
from jaxcap.model import decoders
from jaxcap.training import faults

T = TypeVar("T")


class CheckpointMismatchError(ValueError):
  """The checkpoint in a workdir was trained with another vocabulary or model shape."""


class UnreadableCheckpointError(ValueError):
  """No checkpoint of the ones asked for can be read."""


LATEST, BEST = "checkpoints", "best"
EMA = "ema_params"  # the item holding the parameters' moving average
_DELETING = "deleting"
UNREADABLE = "unreadable"


def _remove_tree(path: str) -> None:
  shutil.rmtree(path, ignore_errors=True)


class _RenameWithFaultPoints(ocp_path.atomicity.AtomicRenameTemporaryPath):
  """Orbax's atomic rename, with `faults` points just before and after it (tests only)."""

  async def finalize(self):
    final = self.get_final()  # <kind>/<step>, or an item inside a step (not a fault point)
    point = f"{final.parent.name}.%s_rename:{final.name}"
    faults.point(point % "before")
    await super().finalize()
    faults.point(point % "after")


def _short_reason(error: Exception, step_dir: str) -> str:
  """One line from orbax's or TensorStore's error: its first line, paths inside the step
  directory made relative, TensorStore's long spec dropped."""
  text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
  text = re.sub(r"\s*\[tensorstore_spec[^=]*=.*$", "", text)
  text = text.replace(step_dir.rstrip("/") + "/", "")
  return text if len(text) <= 400 else text[:400] + " ..."


def ignore_closed_loop_callbacks() -> None:
  """Silences the aftermath of a failed checkpoint read or write (installed once).

  When one array fails to read or write, orbax stops and closes its event loop while
  TensorStore is still busy with the others; each of those then calls back into the closed
  loop, and Python prints its RuntimeError("Event loop is closed") as an unraisable
  exception: dozens of tracebacks after the one error that matters. Only that error is
  dropped; any other goes to the previous `sys.unraisablehook`.
  """
  previous = sys.unraisablehook
  if getattr(previous, "jaxcap", False):
    return

  def hook(unraisable):
    error = unraisable.exc_value
    if not (isinstance(error, RuntimeError) and str(error) == "Event loop is closed"):
      previous(unraisable)

  hook.jaxcap = True
  sys.unraisablehook = hook
  # The sibling reads of a failed restore also fail, and asyncio logs each such task that
  # nobody awaited when it is garbage-collected ("Task exception was never retrieved"), with
  # a traceback; the first of them was already reported in one line.
  logging.getLogger("asyncio").addFilter(_drop_unretrieved_tensorstore_errors)


def _drop_unretrieved_tensorstore_errors(record: logging.LogRecord) -> bool:
  error = record.exc_info[1] if record.exc_info else None
  return not (record.getMessage().startswith("Task exception was never retrieved")
              and error is not None and "tensorstore_spec" in str(error))


def _drop_read_only_note(record: logging.LogRecord) -> bool:
  """Orbax notes every read-only manager ("Given directory is read only=..."): a reader of
  a workdir opens two per load, and the note says nothing the reader does not know."""
  return record.msg != "Given directory is read only=%s"


class Checkpoints:
  """Save / restore / resume for one workdir.

  `kind` picks the folder: LATEST ("checkpoints", the last few, for resuming) or BEST
  ("best", the best by validation CIDEr).
  """

  def __init__(self, workdir: str | os.PathLike, max_to_keep: int = 3, read_only=False,
               kind: str = LATEST):
    self.directory = os.path.join(os.path.abspath(workdir), kind)
    if read_only and _drop_read_only_note not in logging.getLogger("absl").filters:
      logging.getLogger("absl").addFilter(_drop_read_only_note)
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            # Read-only: the options orbax would otherwise reset itself, with one absl
            # warning each (eight on every load).
            max_to_keep=None if read_only else max_to_keep, create=not read_only,
            read_only=read_only, cleanup_tmp_directories=not read_only,
            save_interval_steps=0 if read_only else 1,
            # Orbax names its cross-process barriers after the step; without a prefix, the
            # LATEST and BEST managers saving the same step in a multi-host run share a
            # barrier and abort ("Barrier _async_commit_complete.6 is already ongoing").
            multiprocessing_options=ocp.options.MultiprocessingOptions(
                barrier_sync_key_prefix=kind),
            todelete_subdir=None if read_only else _DELETING,
            temporary_path_class=(_RenameWithFaultPoints if os.environ.get(faults.ENV)
                                  else None)),
    )
    self._read_only = read_only
    self._purge_deleted()

  def steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def save(self, step: int, meta: dict, *, params: Any, opt_state: Any = None,
           ema_params: Any = None) -> None:
    """Starts writing a checkpoint (pytrees on host or one device) in the background;
    without `opt_state` (best/), it can caption but not resume. `ema_params`: the moving
    average, which readers then caption with (`restore_params`)."""
    items = {"params": ocp.args.StandardSave(params), "meta": ocp.args.JsonSave(meta)}
    if opt_state is not None:
      items["opt_state"] = ocp.args.StandardSave(opt_state)
    if ema_params is not None:
      items[EMA] = ocp.args.StandardSave(ema_params)
    self._manager.save(int(step), args=ocp.args.Composite(**items), force=True)
    self._purge_deleted()  # what the previous save moved aside (orbax waited for it above)

  def restore_meta(self, step: int | None = None) -> dict:
    """The JSON record (config, model, vocabulary) of a checkpoint, without any arrays."""
    step = self._require_step(step)
    return self._restore(step, meta=ocp.args.JsonRestore())["meta"]

  def restore_params(self, step: int) -> Any:
    """The decoder parameters to caption with, as saved (no template, no optimizer): the
    moving average when the checkpoint holds one, else `params`."""
    if compat.is_legacy_state_checkpoint(self.step_dir(step)):
      return compat.restore_legacy_state(self._manager, step)[0]
    item = EMA if self.has_ema(step) else "params"
    return self._restore(step, **{item: ocp.args.StandardRestore()})[item]

  def has_ema(self, step: int) -> bool:
    return os.path.isdir(os.path.join(self.step_dir(step), EMA))

  def restore_ema(self, step: int, template: Any) -> Any:
    """The moving average saved at `step`, shaped like `template`; None if none was kept."""
    if not self.has_ema(step):
      return None
    return self._restore(step, **{EMA: ocp.args.StandardRestore(template)})[EMA]

  def restore_training(self, step: int, params: Any, opt_state: Any) -> tuple[Any, Any]:
    """(params, opt_state) of a checkpoint, shaped like the given templates."""
    if compat.is_legacy_state_checkpoint(self.step_dir(step)):
      return compat.restore_legacy_state(self._manager, step, params, opt_state)
    restored = self._restore(step, params=ocp.args.StandardRestore(params),
                             opt_state=ocp.args.StandardRestore(opt_state))
    return restored["params"], restored["opt_state"]

  def newest_readable(self, restore: Callable[[int], T], steps: Sequence[int] | None = None,
                      set_aside: bool = False) -> tuple[int | None, T | None]:
    """(step, restore(step)) for the first of `steps` (default: newest first) that restores.

    Each one that does not gets a line on stderr naming the step and the reason. With
    `set_aside`, once an older step restores (so the code can read this layout and the newer
    files are damaged), the newer ones are moved into `<kind>/unreadable/`, kept, never
    deleted, and a trainer resuming from the older step can save those step numbers again.
    A CheckpointMismatchError from `restore` is not damage: it propagates. (None, None) if
    no step restores.
    """
    steps = sorted(self.steps(), reverse=True) if steps is None else steps
    ignore_closed_loop_callbacks()
    damaged = []  # (step, one-line reason)
    found = None
    for step in steps:
      try:
        found = step, restore(step)
        break
      except CheckpointMismatchError:
        raise
      except Exception as e:  # pylint: disable=broad-except
        # Orbax and TensorStore raise many kinds (FileNotFoundError, ValueError with a
        # TensorStore status, JSONDecodeError, ...) for one thing: the files are damaged.
        damaged.append((step, _short_reason(e, self.step_dir(step))))
    for step, reason in damaged:
      note = f"warning: checkpoint {self.step_dir(step)} cannot be read: {reason}"
      if set_aside and found:
        note += f"; moved it to {self.set_aside(step)}"
      print(note, file=sys.stderr, flush=True)
    return found or (None, None)

  def set_aside(self, step: int) -> str:
    """Moves a step into `<kind>/unreadable/` (where nothing reads it); returns its path."""
    folder = os.path.join(self.directory, UNREADABLE)
    target, n = os.path.join(folder, str(step)), 0
    while os.path.exists(target):
      n += 1
      target = os.path.join(folder, f"{step}.{n}")
    if jax.process_index() == 0:
      os.makedirs(folder, exist_ok=True)
      os.rename(self.step_dir(step), target)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices(f"jaxcap set aside {self.directory} {step}")
    self._manager.reload()
    return target

  def delete(self, step: int) -> None:
    """Drops a step (moved aside atomically, then removed)."""
    self._manager.delete(step)
    self._purge_deleted()

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()
    self._purge_deleted()

  def _restore(self, step: int, **items) -> Any:
    return self._manager.restore(step, args=ocp.args.Composite(**items))

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
