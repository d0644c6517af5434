"""Checkpoints: their items, SIGKILL during old-checkpoint removal, damaged files (the layout
written before params had their own item: tests/test_compat.py)."""

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from jaxcap.training import checkpoints

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def state(step):
  return {"w": np.full((64, 64), float(step), np.float32), "b": np.arange(8.0) + step}


def save(ckpt, step, meta=None):
  """params: state(step); opt_state: state(-step)."""
  ckpt.save(step, {"step": step} if meta is None else meta, params=state(step),
            opt_state=state(-step))


def step_dirs(path):
  return sorted(int(n) for n in os.listdir(path) if n.isdigit())


def test_old_checkpoints_go_away_whole(tmp_path):
  ckpt = checkpoints.Checkpoints(tmp_path, max_to_keep=2)
  for step in range(1, 6):
    save(ckpt, step)
    ckpt.wait()
  ckpt.close()
  directory = tmp_path / checkpoints.LATEST
  assert step_dirs(directory) == [4, 5]
  assert not os.listdir(directory / "deleting")  # moved aside, then removed
  reader = checkpoints.Checkpoints(tmp_path, read_only=True)
  params, opt_state = reader.restore_training(4, state(0), state(0))
  np.testing.assert_array_equal(params["w"], state(4)["w"])
  np.testing.assert_array_equal(opt_state["b"], state(-4)["b"])
  assert reader.restore_meta(5) == {"step": 5}


@pytest.mark.slow
def test_killed_while_removing_an_old_checkpoint(tmp_path):
  # The child process dies (SIGKILL) halfway through removing a dropped checkpoint, after
  # one of its files is gone: the moment at which orbax's own in-place deletion would leave
  # a step directory that lists but cannot be restored.
  script = textwrap.dedent(f"""
      import os, signal, sys
      sys.path.insert(0, {ROOT!r})
      import jax, numpy as np
      from jaxcap.training import checkpoints

      def remove_one_file_then_die(path):
        for folder, _, files in os.walk(path):
          if files:
            os.remove(os.path.join(folder, files[0]))
            break
        os.kill(os.getpid(), signal.SIGKILL)

      checkpoints._remove_tree = remove_one_file_then_die
      ckpt = checkpoints.Checkpoints({str(tmp_path)!r}, max_to_keep=1)
      for step in range(1, 10):
        ckpt.save(step, {{"step": step}}, params={{"w": np.full((64, 64), float(step), np.float32),
                                                  "b": np.arange(8.0) + step}})
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
    np.testing.assert_array_equal(reader.restore_params(step)["w"], state(step)["w"])
    assert reader.restore_meta(step) == {"step": step}
  # The next writer finishes the removal.
  checkpoints.Checkpoints(tmp_path, max_to_keep=1).close()
  assert not os.listdir(directory / "deleting")


def test_params_restore_alone_as_saved(tmp_path):
  ckpt = checkpoints.Checkpoints(tmp_path)
  save(ckpt, 3)
  ckpt.save(4, {"step": 4}, params=state(4))  # best/ saves no optimizer state
  ckpt.close()
  reader = checkpoints.Checkpoints(tmp_path, read_only=True)
  for step in (3, 4):
    params = reader.restore_params(step)  # no template: the tree as saved
    assert set(params) == {"w", "b"}
    np.testing.assert_array_equal(params["b"], state(step)["b"])


def _data_files(item):
  return [os.path.join(d, f) for d, _, files in os.walk(item) if os.path.basename(d) == "d"
          for f in files]


DAMAGE = {
    # kind: (how, what the one line must say)
    "truncated data file": (
        lambda item: [os.truncate(f, os.path.getsize(f) // 2) for f in _data_files(item)],
        "is not valid for value of size"),
    "missing _METADATA": (lambda item: os.remove(os.path.join(item, "_METADATA")),
                          "_METADATA) does not exist at params"),
    "missing manifests": (
        lambda item: [os.remove(os.path.join(d, "manifest.ocdbt"))
                      for d, _, files in os.walk(item) if "manifest.ocdbt" in files],
        "NOT_FOUND"),
    "missing meta": (lambda item: os.remove(os.path.join(item, "..", "meta", "metadata")),
                     "meta/metadata not found"),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_damaged_newest_checkpoint_is_named_and_skipped(tmp_path, capsys, kind):
  ckpt = checkpoints.Checkpoints(tmp_path, max_to_keep=3)
  for step in (1, 2, 3):
    save(ckpt, step)
  ckpt.close()
  how, reason = DAMAGE[kind]
  how(os.path.join(tmp_path, checkpoints.LATEST, "3", "params"))

  reader = checkpoints.Checkpoints(tmp_path, read_only=True)
  read = lambda step: (reader.restore_params(step), reader.restore_meta(step))
  step, (params, meta) = reader.newest_readable(read)
  assert step == 2 and meta == {"step": 2}
  np.testing.assert_array_equal(params["w"], state(2)["w"])
  lines = capsys.readouterr().err.strip().splitlines()
  assert len(lines) == 1, lines
  step_dir = os.path.join(tmp_path, checkpoints.LATEST, "3")
  assert lines[0].startswith(f"warning: checkpoint {step_dir} cannot be read: ")
  assert reason in lines[0] and "tensorstore_spec" not in lines[0]
  assert os.path.isdir(step_dir)  # a reader leaves it where it is

  # A trainer moves it aside, where it stays, and can then save step 3 again.
  writer = checkpoints.Checkpoints(tmp_path, max_to_keep=3)
  step, _ = writer.newest_readable(
      lambda s: (writer.restore_params(s), writer.restore_meta(s)), set_aside=True)
  moved = os.path.join(tmp_path, checkpoints.LATEST, checkpoints.UNREADABLE, "3")
  assert step == 2 and os.path.isdir(moved) and not os.path.exists(step_dir)
  assert capsys.readouterr().err.strip().endswith(f"moved it to {moved}")
  save(writer, 3)
  writer.close()
  assert checkpoints.Checkpoints(tmp_path, read_only=True).steps() == [1, 2, 3]


def test_a_mismatch_is_not_damage(tmp_path):
  ckpt = checkpoints.Checkpoints(tmp_path)
  save(ckpt, 1)
  ckpt.close()

  def refuse(step):
    raise checkpoints.CheckpointMismatchError("units differ")

  with pytest.raises(checkpoints.CheckpointMismatchError):
    checkpoints.Checkpoints(tmp_path).newest_readable(refuse, set_aside=True)
  assert os.path.isdir(tmp_path / checkpoints.LATEST / "1")


def test_nothing_is_moved_when_no_checkpoint_restores(tmp_path, capsys):
  # Then it is as likely code that cannot read them as damage to all: leave them be.
  ckpt = checkpoints.Checkpoints(tmp_path)
  save(ckpt, 1)
  ckpt.close()
  DAMAGE["missing meta"][0](os.path.join(tmp_path, checkpoints.LATEST, "1", "params"))
  writer = checkpoints.Checkpoints(tmp_path)
  assert writer.newest_readable(writer.restore_meta, set_aside=True) == (None, None)
  assert "meta/metadata not found" in capsys.readouterr().err
  assert writer.steps() == [1]


def test_unretrieved_sibling_read_errors_are_not_logged():
  import logging  # pylint: disable=g-import-not-at-top
  checkpoints.ignore_closed_loop_callbacks()
  asyncio_logger = logging.getLogger("asyncio")

  def record(error):
    return logging.LogRecord("asyncio", logging.ERROR, __file__, 1,
                             "Task exception was never retrieved\nfuture: <Task ...>", None,
                             (type(error), error, None))

  sibling = ValueError("OUT_OF_RANGE: Error reading ... [tensorstore_spec='{...}']")
  assert not asyncio_logger.filter(record(sibling))
  assert asyncio_logger.filter(record(ValueError("something else")))  # still logged
