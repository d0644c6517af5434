"""Crashes, resumes and damaged workdirs, end to end with train.py and sample.py.

Every kill lands at a named point (`jaxcap.training.faults`, JAXCAP_FAULT=name:step), not after a
sleep: inside a checkpoint save before its rename, right after it, after a metrics row.
"""

import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from helpers import ROOT, checkpoint_state, metrics_rows, train  # noqa: F401

from jaxcap.data import shapes
from jaxcap.training import checkpoints
from jaxcap.training import workdir as workdir_lib

pytestmark = pytest.mark.slow  # train.py killed and resumed in subprocesses

KILLED = -signal.SIGKILL


def sample(env, workdir, *flags):
  images = shapes.write_examples(os.path.join(workdir, "..", "images"), seed=3, start=0,
                                 count=1)
  return subprocess.run(
      [sys.executable, "sample.py", "--workdir", str(workdir), "--greedy", "--cache_dir", "",
       "--image", images[0][0]] + list(flags),
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def uninterrupted(env, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("uninterrupted") / "w"
  result = train(env, workdir, "--config.train.num_steps=16")
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir


def test_killed_at_every_commit_point_resumes_to_the_same_run(env, uninterrupted, tmp_path):
  workdir = tmp_path / "w"
  runs = [
      # (num_steps, fault, extra flags); each run resumes what the one before left.
      # Killed after best/4 is committed, before checkpoints/4 (and with validation over a
      # single image, whose CIDEr is 0 by construction: the rerun's step-4 model is "better"
      # and must be saved as best/4 again, which used to fail with "Checkpoint for step 4
      # already exists" on every attempt).
      (8, "best.after_rename:4", ["--config.train.eval_examples=1"]),
      # Inside best/4's save (written, not renamed; the first validation always saves one).
      (12, "best.before_rename:4", []),
      (12, "checkpoints.before_rename:8", []),  # inside checkpoints/8's save
      (16, "metrics.after_write:10", []),  # a logged row with no checkpoint after it
      (16, "checkpoints.after_rename:12", []),
  ]
  for num_steps, fault, flags in runs:
    result = train(env, workdir, f"--config.train.num_steps={num_steps}", *flags, fault=fault)
    assert result.returncode == KILLED, (fault, result.stderr[-3000:])
  # The same command with a larger num_steps (a changed config) resumes and finishes.
  result = train(env, workdir, "--config.train.num_steps=16")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "resumed from step 12" in result.stdout
  assert "Traceback" not in result.stderr

  # Same parameters and optimizer state, bit for bit, as the run never interrupted...
  assert checkpoints.Checkpoints(workdir, read_only=True).steps() == [12, 16]
  assert_trees_equal(checkpoint_state(workdir, 16), checkpoint_state(uninterrupted, 16))
  # ... the same batches in the same order (every logged training loss equal), one row per
  # step (rows logged after the last checkpoint of a killed run are dropped on resume) ...
  rows, reference = metrics_rows(workdir), metrics_rows(uninterrupted)
  assert [r["step"] for r in rows] == list(range(2, 17, 2))
  assert [r["train_loss"] for r in rows] == [r["train_loss"] for r in reference]
  # ... and the same best checkpoint.
  assert checkpoints.Checkpoints(workdir, read_only=True, kind=checkpoints.BEST).steps() == \
      checkpoints.Checkpoints(uninterrupted, read_only=True, kind=checkpoints.BEST).steps()
  assert not os.path.exists(workdir / "checkpoints" / checkpoints.UNREADABLE)


def damage(step_dir, kind):
  """Damages the `params` item of a checkpoint the ways a disk or a person does."""
  item = os.path.join(step_dir, "params")
  if kind == "truncated":
    data = [os.path.join(d, f) for d, _, fs in os.walk(item) if os.path.basename(d) == "d"
            for f in fs]
    for path in data:
      os.truncate(path, os.path.getsize(path) // 2)
  elif kind == "no_metadata":
    os.remove(os.path.join(item, "_METADATA"))
  elif kind == "no_manifests":
    for d, _, fs in os.walk(item):
      for f in fs:
        if f == "manifest.ocdbt":
          os.remove(os.path.join(d, f))


@pytest.mark.parametrize("kind", ["truncated", "no_metadata"])
def test_sample_falls_back_from_a_damaged_checkpoint(env, uninterrupted, tmp_path, kind):
  workdir = tmp_path / "w"
  shutil.copytree(uninterrupted, workdir)
  damage(workdir / "checkpoints" / "16", kind)
  result = sample(env, workdir, "--checkpoint", "latest")
  assert result.returncode == 0, result.stderr[-3000:]
  lines = [l for l in result.stderr.strip().splitlines()
           if not l.startswith(("decoding:", "model:"))]
  assert "Traceback" not in result.stderr and len(lines) == 2, result.stderr
  assert lines[0].startswith(f"warning: checkpoint {workdir}/checkpoints/16 cannot be read: ")
  assert {"truncated": "not valid for value of size",
          "no_metadata": "_METADATA"}[kind] in lines[0]
  assert lines[1].startswith(f"loaded {workdir}/checkpoints/12 (step 12")
  assert (workdir / "checkpoints" / "16").is_dir()  # a reader never moves anything


def test_train_resumes_from_the_newest_readable_checkpoint(env, uninterrupted, tmp_path):
  workdir = tmp_path / "w"
  shutil.copytree(uninterrupted, workdir)
  damage(workdir / "checkpoints" / "16", "no_manifests")
  result = train(env, workdir, "--config.train.num_steps=20")
  assert result.returncode == 0, result.stderr[-3000:]
  warnings = [l for l in result.stderr.splitlines() if l.startswith("warning:")]
  assert len(warnings) == 1 and f"{workdir}/checkpoints/16 cannot be read" in warnings[0]
  moved = workdir / "checkpoints" / checkpoints.UNREADABLE / "16"
  assert warnings[0].endswith(f"moved it to {moved}") and (moved / "params").is_dir()
  assert "resumed from step 12" in result.stdout and "Traceback" not in result.stderr
  assert checkpoints.Checkpoints(workdir, read_only=True).steps() == [16, 20]
  assert [r["step"] for r in metrics_rows(workdir)] == list(range(2, 21, 2))


def test_checkpoint_flag_picks_best_by_default(env, uninterrupted):
  best = checkpoints.Checkpoints(uninterrupted, read_only=True, kind=checkpoints.BEST).steps()
  result = sample(env, uninterrupted)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"loaded {uninterrupted}/best/{best[0]} (step {best[0]}, validation CIDEr" in \
      result.stderr
  for flag, loaded in (("latest", "checkpoints/16"), ("12", "checkpoints/12")):
    result = sample(env, uninterrupted, "--checkpoint", flag)
    assert f"loaded {uninterrupted}/{loaded} " in result.stderr, result.stderr
  result = sample(env, uninterrupted, "--checkpoint", "7")
  assert result.returncode == 1
  assert result.stderr.strip().endswith("(best/: %d; checkpoints/: 12, 16)" % best[0])


def test_second_trainer_on_a_busy_workdir_refuses(env, tmp_path):
  workdir = tmp_path / "w"
  first = train(env, workdir, "--config.train.num_steps=100000", popen=True)
  try:
    lock_file = workdir / workdir_lib.LOCK_FILE
    # Wait until the first run holds the lock (its record names it).
    while not (lock_file.exists() and f'"pid": {first.pid}' in lock_file.read_text()):
      assert first.poll() is None, first.communicate()[1][-3000:]
      time.sleep(0.1)
    second = train(env, workdir, "--config.train.num_steps=8")
    assert second.returncode == 1
    assert len(second.stderr.strip().splitlines()) == 1, second.stderr
    assert f"is in use by another training run (pid {first.pid} on " in second.stderr
  finally:
    first.send_signal(signal.SIGKILL)
    first.wait()
  # The killed run's lock is stale: the next one takes it, and knows the last one crashed.
  lock = workdir_lib.Lock(str(workdir))
  assert lock.previous["pid"] == first.pid
  lock.release()
