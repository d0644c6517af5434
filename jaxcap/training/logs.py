"""Training logs in the workdir: TensorBoard event files and metrics.jsonl, written together.

    writer = logs.Writer(workdir, config.to_dict(), start_step)
    writer.write(step, {"train_loss": 2.31, "learning_rate": 1e-3})
    writer.close()

`tensorboard --logdir WORKDIR` shows every scalar (tag = its key) and, under HPARAMS, the
config (one flattened field per column, validation metrics beside them); each `write` is also
one line {"step": ..., **scalars} of metrics.jsonl. Event files are written by tensorboardX,
which needs neither TensorFlow nor TensorBoard.
"""

from __future__ import annotations

import json
import os
import time
from typing import Mapping

import tensorboardX
from tensorboardX import summary

# Shown beside the config in TensorBoard's HPARAMS table (scalars of these names, when logged).
HPARAM_METRICS = ("val_loss", "val_bleu4", "val_cider", "val_exact_match")


def flatten(config: Mapping, prefix: str = "") -> dict[str, str | int | float | bool]:
  """A nested config dict -> {"train.learning_rate": 0.001, ...}; values TensorBoard cannot show
  (tuples, None, ...) as their text."""
  out = {}
  for key, value in config.items():
    name = f"{prefix}{key}"
    if isinstance(value, Mapping):
      out.update(flatten(value, name + "."))
    elif isinstance(value, (str, bool, int, float)):
      out[name] = value
    else:
      out[name] = str(value)
  return out


def drop_rows_after(path: str, step: int) -> int:
  """Drops the rows of a metrics.jsonl logged after `step` (and a line cut short by a kill).

  A run killed after logging step s but before its step-s checkpoint resumes from an earlier
  step and logs s again: the log keeps one row per step. Replaces the file atomically;
  returns how many rows went.
  """
  if not os.path.exists(path):
    return 0
  with open(path) as f:
    lines = f.read().splitlines()
  kept = []
  for line in lines:
    try:
      if json.loads(line)["step"] <= step:
        kept.append(line)
    except (ValueError, KeyError, TypeError):
      pass  # a line cut short
  if len(kept) < len(lines):
    with open(path + ".tmp", "w") as f:
      f.write("".join(line + "\n" for line in kept))
    os.replace(path + ".tmp", path)
  return len(lines) - len(kept)


class Writer:
  """Scalars per step into TensorBoard and metrics.jsonl; does nothing where `enabled` is False
  (every process but the first of a multi-host run)."""

  def __init__(self, workdir: str, config: Mapping | None = None, start_step: int = 0,
               enabled: bool = True):
    self._enabled = enabled
    if not enabled:
      return
    self._jsonl = os.path.join(workdir, "metrics.jsonl")
    dropped = drop_rows_after(self._jsonl, start_step)
    if dropped:
      print(f"dropped {dropped} row(s) after step {start_step} from {self._jsonl}: newer than "
            "the checkpoint this run resumes from")
    # A run resumed at start_step hides the events an earlier run wrote after it (they came
    # from steps the checkpoint does not hold), so each curve stays one line; metrics.jsonl
    # loses those rows (above).
    # The nanosecond suffix: a file name of its own (tensorboardX's names have whole seconds and
    # it overwrites), sorting after the earlier runs' files, as the purge needs.
    self._tb = tensorboardX.SummaryWriter(logdir=workdir,
                                          purge_step=start_step + 1 if start_step else None,
                                          filename_suffix=f".{time.time_ns()}")
    if config is not None:
      experiment, session_start, _ = summary.hparams(flatten(config),
                                                     dict.fromkeys(HPARAM_METRICS))
      self._tb.file_writer.add_summary(experiment)
      self._tb.file_writer.add_summary(session_start)
      self._tb.add_text("config", "```\n" + json.dumps(config, indent=2) + "\n```", start_step)

  def write(self, step: int, scalars: Mapping[str, float]):
    """Logs `scalars` ({name: number}) at `step`: one TensorBoard scalar each, one JSON line."""
    if not self._enabled:
      return
    scalars = {k: float(v) for k, v in scalars.items()}
    for name, value in scalars.items():
      self._tb.add_scalar(name, value, step)
    self._tb.flush()  # visible to a running `tensorboard` now, and kept if the run dies
    with open(self._jsonl, "a") as f:
      f.write(json.dumps({"step": step, **scalars}) + "\n")

  def close(self):
    if self._enabled:
      self._tb.close()
