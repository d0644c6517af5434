"""Named points at which a test can kill the process, to check that a crash there is safe.

`point("name:step")` does nothing unless the environment variable JAXCAP_FAULT is
`name:step`; then it SIGKILLs the process on the spot, as a power cut or the OOM killer would
(no `finally`, no atexit, no flushing). Tests use it instead of sleep-timed kills, so each
crash lands exactly where it is meant to, every time.
"""

from __future__ import annotations

import os
import signal

ENV = "JAXCAP_FAULT"


def point(where: str) -> None:
  if os.environ.get(ENV) == where:
    os.kill(os.getpid(), signal.SIGKILL)
