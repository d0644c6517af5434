"""A full disk as one line naming the file and what was being written, not a traceback."""

from __future__ import annotations

import contextlib
import errno
import re

_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(OSError):
  """No space left (or over quota) while writing; the message names the file."""


def is_full(e: BaseException) -> bool:
  """An OSError of a full disk, or TensorStore's (orbax's) report of one."""
  if isinstance(e, OSError):
    return e.errno in _FULL
  return "No space left on device" in str(e) or "Disk quota exceeded" in str(e)


@contextlib.contextmanager
def writing(path, what: str):
  """Raises DiskFullError naming `path` and `what` if the disk fills up inside the block
  (a full disk fails `write` or `close`, whose errors name no file)."""
  try:
    yield
  except OSError as e:
    if e.errno in _FULL:
      raise DiskFullError(e.errno, f"no space left on device writing {what} ({path}); free "
                          "some space and re-run") from None
    raise


def describe(e: BaseException) -> str:
  """One line for a full-disk error; orbax's name the checkpoint step folder."""
  if isinstance(e, DiskFullError):
    return e.strerror
  paths = re.findall(r'local file "([^"]+)"', str(e))
  if paths:  # .../checkpoints/40.orbax-checkpoint-tmp/state... -> .../checkpoints/40
    step = paths[-1].split(".orbax-checkpoint-tmp")[0]
    return (f"no space left on device writing the checkpoint {step}; free some space and "
            "re-run (training resumes from the last complete checkpoint)")
  where = f" ({e.filename})" if isinstance(e, OSError) and e.filename else ""
  return f"no space left on device{where}; free some space and re-run"
