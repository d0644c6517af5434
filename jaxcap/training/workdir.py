"""A training workdir: checked writable at start-up (`prepare`), and the lock that keeps it
to one run at a time."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import tempfile
import time

LOCK_FILE = "lock"
# The folders a run writes into besides the workdir itself (checkpoints.LATEST, BEST).
WRITTEN = ("checkpoints", "best")


class WorkdirBusyError(RuntimeError):
  """Another process is training in this workdir."""


class WorkdirError(ValueError):
  """The workdir cannot be used: a file, or a folder this process cannot write in."""


def prepare(workdir: str) -> None:
  """Creates `workdir` if need be and checks, before any work, that the run can write in it
  and in those of its `WRITTEN` folders that exist (a read-only one would otherwise fail
  only at the first checkpoint, minutes in). Raises WorkdirError, one line."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise WorkdirError(f"--workdir {workdir} is a file; name a folder (it is created if "
                       "missing)")
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:  # a parent is a file, read-only, ...
    raise WorkdirError(f"cannot create the workdir {workdir}: {e.strerror or e}") from None
  for path in [workdir] + [os.path.join(workdir, name) for name in WRITTEN]:
    if path != workdir and not os.path.lexists(path):
      continue  # created inside a writable workdir when first needed
    if not os.path.isdir(path):
      raise WorkdirError(f"{path} is not a folder; move it away (the run keeps its "
                         "checkpoints there)")
    try:
      with tempfile.TemporaryFile(dir=path, prefix=".write-test-"):
        pass
    except OSError as e:
      raise WorkdirError(f"cannot write in {path} ({e.strerror or e}); make it writable "
                         "(e.g. chmod -R u+w) or use another --workdir") from None


class Lock:
  """An exclusive lock on a workdir for one training process, held until `release` or exit.

  The lock is an flock(2) on `<workdir>/lock`, which the kernel drops when the process dies,
  however it dies, so a crashed run's lock is never in the way. The file records the holder
  (PID, host, start time) so that a refusal can name it; a clean exit empties it, so a record
  found on taking the lock (`previous`) is a run that crashed. Where the filesystem has no
  flock, a record whose process still runs on this host counts as held.
  """

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, LOCK_FILE)
    self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    self.previous = _read_holder(self._fd)
    try:
      fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      held = False
    except OSError as e:
      if e.errno not in (errno.EWOULDBLOCK, errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
        raise
      held = e.errno == errno.EWOULDBLOCK or _alive_here(self.previous)
    if held:
      other = _read_holder(self._fd) or self.previous  # read again: it may have just started
      os.close(self._fd)
      holder = (f"pid {other['pid']} on {other['host']}, started {other['started']}"
                if other else "a process starting up")
      raise WorkdirBusyError(f"{workdir} is in use by another training run ({holder}); wait "
                             f"for it to finish or stop it, or use another --workdir")
    record = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    os.ftruncate(self._fd, 0)
    os.pwrite(self._fd, json.dumps(record).encode(), 0)

  def release(self) -> None:
    if self._fd is not None:
      os.ftruncate(self._fd, 0)  # a clean exit leaves no holder behind
      os.close(self._fd)  # which drops the flock
      self._fd = None


def _read_holder(fd: int) -> dict | None:
  try:
    record = json.loads(os.pread(fd, 4096, 0))
    return record if {"pid", "host", "started"} <= set(record) else None
  except (ValueError, TypeError):
    return None  # empty (released, or never taken) or cut short


def _alive_here(record: dict | None) -> bool:
  if not record or record["host"] != socket.gethostname():
    return False
  try:
    os.kill(record["pid"], 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    pass  # someone else's process: it exists
  return True
