"""The workdir lock: two processes, a killed holder, filesystems without flock."""

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from jaxcap.training import workdir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

HOLD = """
import sys
from jaxcap.training import workdir
lock = workdir.Lock(sys.argv[1])
print("locked", flush=True)
sys.stdin.read()  # hold it until stdin closes, or until killed
lock.release()
"""


def hold(path):
  proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], cwd=ROOT,
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == "locked"
  return proc


@pytest.mark.slow
def test_second_process_is_refused_and_told_who_holds_it(tmp_path):
  holder = hold(tmp_path)
  try:
    with pytest.raises(workdir.WorkdirBusyError) as refused:
      workdir.Lock(str(tmp_path))
    message = str(refused.value)
    assert "\n" not in message
    assert f"pid {holder.pid} on {socket.gethostname()}, started " in message
  finally:
    holder.stdin.close()
    holder.wait()
  # Released cleanly: free, and no crashed holder on record.
  lock = workdir.Lock(str(tmp_path))
  assert lock.previous is None
  lock.release()


@pytest.mark.slow
def test_lock_of_a_killed_process_is_stale(tmp_path):
  holder = hold(tmp_path)
  holder.send_signal(signal.SIGKILL)
  holder.wait()
  # The kernel dropped the flock; the record left behind names the crashed run.
  lock = workdir.Lock(str(tmp_path))
  assert lock.previous["pid"] == holder.pid
  record = json.loads((tmp_path / workdir.LOCK_FILE).read_text())
  assert record["pid"] == os.getpid()
  lock.release()


def test_without_flock_a_live_pid_on_this_host_holds_it(tmp_path, monkeypatch):
  # Filesystems without flock(2) (some network mounts): the PID record decides.
  def no_flock(*_):
    raise OSError(38, "Function not implemented")  # ENOSYS
  monkeypatch.setattr(workdir.fcntl, "flock", no_flock)
  (tmp_path / workdir.LOCK_FILE).write_text(json.dumps(
      {"pid": os.getppid(), "host": socket.gethostname(), "started": "earlier"}))
  with pytest.raises(workdir.WorkdirBusyError, match=f"pid {os.getppid()} on "):
    workdir.Lock(str(tmp_path))
  gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                        capture_output=True, text=True).stdout.strip()
  (tmp_path / workdir.LOCK_FILE).write_text(json.dumps(
      {"pid": int(gone), "host": socket.gethostname(), "started": "earlier"}))
  workdir.Lock(str(tmp_path)).release()
