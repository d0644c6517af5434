"""Checkpoints survive SIGKILL at any point, old-checkpoint removal included."""

import os
import signal
import subprocess
import sys
import textwrap

import jax
import numpy as np

from jaxcap import checkpoints

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def state(step):
  return {"w": np.full((64, 64), float(step), np.float32), "b": np.arange(8.0) + step}


def step_dirs(path):
  return sorted(int(n) for n in os.listdir(path) if n.isdigit())


def test_old_checkpoints_go_away_whole(tmp_path):
  ckpt = checkpoints.Checkpoints(tmp_path, max_to_keep=2)
  for step in range(1, 6):
    ckpt.save(step, state(step), jax.random.key(step), {"step": step})
    ckpt.wait()
  ckpt.close()
  directory = tmp_path / checkpoints.LATEST
  assert step_dirs(directory) == [4, 5]
  assert not os.listdir(directory / "deleting")  # moved aside, then removed
  reader = checkpoints.Checkpoints(tmp_path, read_only=True)
  restored, _ = reader.restore(state(0), step=4)
  np.testing.assert_array_equal(restored["w"], state(4)["w"])
  assert reader.restore_meta(5) == {"step": 5}


def test_killed_while_removing_an_old_checkpoint(tmp_path):
  # The child process dies (SIGKILL) halfway through removing a dropped checkpoint, after
  # one of its files is gone: the moment at which orbax's own in-place deletion would leave
  # a step directory that lists but cannot be restored.
  script = textwrap.dedent(f"""
      import os, signal, sys
      sys.path.insert(0, {ROOT!r})
      import jax, numpy as np
      from jaxcap import checkpoints

      def remove_one_file_then_die(path):
        for folder, _, files in os.walk(path):
          if files:
            os.remove(os.path.join(folder, files[0]))
            break
        os.kill(os.getpid(), signal.SIGKILL)

      checkpoints._remove_tree = remove_one_file_then_die
      ckpt = checkpoints.Checkpoints({str(tmp_path)!r}, max_to_keep=1)
      for step in range(1, 10):
        ckpt.save(step, {{"w": np.full((64, 64), float(step), np.float32),
                          "b": np.arange(8.0) + step}}, jax.random.key(step), {{"step": step}})
        ckpt.wait()
  """)
  proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
  directory = tmp_path / checkpoints.LATEST
  assert os.listdir(directory / "deleting")  # the half-removed one is there, not a step
  reader = checkpoints.Checkpoints(tmp_path, read_only=True)
  listed = reader._manager.all_steps()
  assert listed and list(listed) == step_dirs(directory)
  for step in listed:
    restored, _ = reader.restore(state(0), step=step)
    np.testing.assert_array_equal(restored["w"], state(step)["w"])
    assert reader.restore_meta(step) == {"step": step}
  # The next writer finishes the removal.
  checkpoints.Checkpoints(tmp_path, max_to_keep=1).close()
  assert not os.listdir(directory / "deleting")
