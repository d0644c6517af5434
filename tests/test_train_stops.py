"""train.py says what it does and stops cleanly: --help, eval_every, the start-up summary, the
progress bar's numbers, Ctrl-C / SIGTERM, and workdirs it cannot use."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from helpers import ROOT, TINY_RESUME as TINY, metrics_rows, train  # noqa: F401

from jaxcap.training import checkpoints, stopping
from jaxcap.training import workdir as workdir_lib

BIG = "--config.train.num_steps=100000"  # never reached: the run is stopped first


def test_help_lists_every_config_field_with_default_and_range():
  # (How fast --help answers is a benchmark matter, not a timed test.)
  result = subprocess.run([sys.executable, "train.py", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  row = [l for l in lines if "--config.train.eval_every=" in l]
  assert len(row) == 1 and row[0].split() == ["--config.train.eval_every=250", "an", "integer",
                                              ">=", "1"]
  assert any(l.split()[:1] == ["--config.train.learning_rate=0.001"] and
             l.endswith("a number > 0") for l in lines)
  assert any("--config.encoder.resize='pil_bilinear'" in l and "one of" in l for l in lines)
  assert "--workdir" in result.stdout
  # Another config's fields and defaults.
  result = subprocess.run([sys.executable, "train.py", "--config=configs/jsonl.py", "--help"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0 and "--config.data.path=" in result.stdout


@pytest.mark.slow
def test_eval_every_is_honoured_apart_from_log_every(env, tmp_path):
  result = train(env, tmp_path / "w", "--config.train.num_steps=50",
                 "--config.train.log_every=20", "--config.train.eval_every=25",
                 "--config.train.checkpoint_every=50", "--config.train.learning_rate=3e-5")
  assert result.returncode == 0, result.stderr[-3000:]
  rows = metrics_rows(tmp_path / "w")
  assert [r["step"] for r in rows if "val_cider" in r] == [25, 50]
  assert [r["step"] for r in rows if "train_loss" in r] == [20, 40, 50]
  # The start-up summary, before the first step.
  assert "data: train 48 examples (48 images), val 16 examples (16 images)" in result.stdout
  assert "0 longer than model.max_length = 16" in result.stdout
  # The bar: 3 significant digits, scientific where needed (round(v, 4) showed 0).
  bar = result.stderr.replace("\r", "\n")
  assert "learning_rate=3e-05" in bar and "learning_rate=0," not in bar
  cider = f"{rows[1]['val_cider'] * 100:.3g}"  # the COCO x100 scale, as everywhere shown
  assert f"val_cider={cider}" in bar


def wait_for(predicate, process, timeout=300):
  deadline = time.monotonic() + timeout
  while not predicate():
    assert process.poll() is None, process.communicate()[1][-3000:]
    assert time.monotonic() < deadline
    time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_at_the_step_reached_and_the_rerun_resumes(env, tmp_path, signum):
  workdir = tmp_path / "w"
  run = train(env, workdir, BIG, "--config.train.checkpoint_every=1000", popen=True)
  try:
    wait_for(lambda: (workdir / "metrics.jsonl").exists(), run)  # training, past step 2
    run.send_signal(signum)
    _, stderr = run.communicate(timeout=120)
  finally:
    run.kill()
  assert run.returncode == 128 + signum, stderr[-3000:]
  assert "Traceback" not in stderr
  last = stderr.strip().splitlines()[-1]
  assert last.startswith("interrupted at step ") and \
      last.endswith("; saved; run the same command to resume"), stderr[-3000:]
  step = int(last.split()[3].rstrip(";"))
  assert step >= 2
  assert checkpoints.Checkpoints(workdir, read_only=True).steps() == [step]
  assert max(r["step"] for r in metrics_rows(workdir)) <= step  # nothing a resume would redo
  assert json.loads((workdir / workdir_lib.LOCK_FILE).read_text() or "null") is None  # clean
  result = train(env, workdir, f"--config.train.num_steps={step + 2}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"resumed from step {step} " in result.stdout
  steps = [r["step"] for r in metrics_rows(workdir)]
  assert len(steps) == len(set(steps)) and steps[-1] == step + 2


def test_second_signal_aborts_at_once_and_handlers_are_restored():
  before = signal.getsignal(signal.SIGINT)
  with stopping.Signals() as signals:
    with pytest.raises(stopping.Interrupted) as e:  # before the loop: nothing to wait for
      os.kill(os.getpid(), signal.SIGTERM)
      time.sleep(1)  # the handler runs at once; this never ends
    assert (e.value.step, e.value.exit_code, e.value.aborted) == (None, 143, False)
    assert str(e.value) == "interrupted before training began; nothing to save"
  assert signal.getsignal(signal.SIGINT) is before
  with stopping.Signals() as signals:
    signals.deferring = True
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.1)
    assert signals.signum == signal.SIGINT  # noted, for the loop to stop between steps
    with pytest.raises(stopping.Interrupted) as e:
      os.kill(os.getpid(), signal.SIGINT)
      time.sleep(1)
    assert (e.value.exit_code, e.value.aborted) == (130, True)
    assert str(e.value).startswith("aborted;")
  assert signal.getsignal(signal.SIGINT) is before


def one_line_error(result):
  assert result.returncode == 1, result.stderr[-3000:]
  assert "Traceback" not in result.stderr
  assert len(result.stderr.strip().splitlines()) == 1, result.stderr
  return result.stderr.strip()


def test_workdir_naming_a_file_is_one_line(env, tmp_path):
  path = tmp_path / "a_file"
  path.write_text("not a folder")
  error = one_line_error(train(env, path, "--config.train.num_steps=2"))
  assert error == f"error: --workdir {path} is a file; name a folder (it is created if missing)"


def test_checkpoints_that_is_not_a_folder_is_one_line(env, tmp_path):
  (tmp_path / "w").mkdir()
  (tmp_path / "w" / "checkpoints").write_text("")
  error = one_line_error(train(env, tmp_path / "w", "--config.train.num_steps=2"))
  assert "checkpoints is not a folder" in error


@pytest.mark.parametrize("where", ["", "checkpoints", "best"])
def test_unwritable_workdir_folders_are_named(tmp_path, monkeypatch, where):
  # Root writes anywhere, so the refusal a read-only folder gives is simulated.
  for name in workdir_lib.WRITTEN:
    (tmp_path / name).mkdir()
  unwritable = os.path.join(str(tmp_path), where) if where else str(tmp_path)
  real = workdir_lib.tempfile.TemporaryFile

  def temporary_file(dir, **kwargs):  # pylint: disable=redefined-builtin
    if os.path.normpath(dir) == os.path.normpath(unwritable):
      raise PermissionError(13, "Permission denied")
    return real(dir=dir, **kwargs)

  monkeypatch.setattr(workdir_lib.tempfile, "TemporaryFile", temporary_file)
  with pytest.raises(workdir_lib.WorkdirError) as e:
    workdir_lib.prepare(str(tmp_path))
  assert str(e.value) == (f"cannot write in {unwritable} (Permission denied); make it "
                          "writable (e.g. chmod -R u+w) or use another --workdir")
