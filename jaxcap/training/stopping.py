"""Stopping a training run cleanly on SIGINT (Ctrl-C) or SIGTERM.

    with stopping.Signals() as signals:
      ...                      # a signal here raises Interrupted at once (nothing to save)
      signals.deferring = True
      for step in ...:
        ...                    # a signal here only sets signals.signum
        if signals.signum:     # between steps: save, then
          raise stopping.Interrupted(signals.signum, step)

A second signal raises Interrupted(aborted=True) wherever the run is, so a stuck save or
validation can still be cut short. Interrupted is a KeyboardInterrupt: code that handles
errors (`except Exception`) lets it through.
"""

from __future__ import annotations

import signal
import sys
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
  """A run stopped by a signal.

  signum: the signal; step: the step saved at the stop (None: nothing saved, e.g. before
  training began); aborted: a second signal cut the run short wherever it was.
  """

  def __init__(self, signum: int, step: int | None = None, aborted: bool = False):
    super().__init__(signum, step, aborted)
    self.signum, self.step, self.aborted = signum, step, aborted

  @property
  def exit_code(self) -> int:
    return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM

  def __str__(self) -> str:
    if self.aborted:
      return "aborted; the last complete checkpoint is kept; run the same command to resume"
    if self.step is None:
      return "interrupted before training began; nothing to save"
    return f"interrupted at step {self.step}; saved; run the same command to resume"


class Signals:
  """SIGINT and SIGTERM handlers while entered (the previous ones are restored on exit).

  While `deferring` is True, a first signal is only recorded (`signum`), for the loop to
  stop between steps. Off the main thread, where Python cannot set handlers, it does nothing
  (signum stays None).
  """

  def __init__(self):
    self.signum: int | None = None
    self.deferring = False
    self._previous = {}

  def __enter__(self) -> "Signals":
    if threading.current_thread() is threading.main_thread():
      # A SIGINT ignored by whoever started the process (nohup, `cmd &` in a script) stays
      # ignored, as Python's own Ctrl-C handling leaves it.
      self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS
                        if signal.getsignal(s) is not signal.SIG_IGN or s != signal.SIGINT}
    return self

  def __exit__(self, *exc) -> None:
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    if self.signum is not None:
      raise Interrupted(signum, aborted=True)
    self.signum = signum
    if not self.deferring:
      raise Interrupted(signum)
    print(f"\n{signal.Signals(signum).name}: stopping after this step and saving a "
          "checkpoint (Ctrl-C again to abort at once)", file=sys.stderr, flush=True)
