"""A full disk is one line naming the file and what was being written (/dev/full gives a
real ENOSPC on every write)."""

import errno
import os

import pytest
from helpers import run, train_cmd

from jaxcap.data import disk


def test_writing_names_path_and_what():
  with pytest.raises(disk.DiskFullError) as e:
    with disk.writing("/dev/full", "the metrics log"), open("/dev/full", "w") as f:
      f.write("x" * 10)
  assert e.value.errno == errno.ENOSPC and disk.is_full(e.value)
  assert disk.describe(e.value) == ("no space left on device writing the metrics log "
                                    "(/dev/full); free some space and re-run")


def test_other_errors_pass_through(tmp_path):
  with pytest.raises(FileNotFoundError):
    with disk.writing(tmp_path / "no" / "such", "x"), open(tmp_path / "no" / "such", "w"):
      pass


def test_orbax_error_names_the_checkpoint_step():
  # The ValueError orbax raises from TensorStore (seen with a workdir on a full tmpfs).
  error = ValueError(
      'RESOURCE_EXHAUSTED: Error writing "step/0" in OCDBT database at local file "/w/best/4.'
      'orbax-checkpoint-tmp/state.orbax-checkpoint-tmp/ocdbt.process_0/": Failed writing: '
      '"/w/best/4.orbax-checkpoint-tmp/state.orbax-checkpoint-tmp/ocdbt.process_0/d/17e2": '
      'Failed to write 79102 bytes to file 16: No space left on device [os_error_code=\'28\']')
  assert disk.is_full(error) and not disk.is_full(ValueError("bad caption"))
  assert disk.describe(error).startswith(
      "no space left on device writing the checkpoint /w/best/4; ")


@pytest.mark.slow
def test_train_py_full_disk_is_one_line(tmp_path):
  workdir = tmp_path / "w"
  workdir.mkdir()
  os.symlink("/dev/full", workdir / "config.json")  # every write to it: ENOSPC
  result = run(train_cmd(workdir, "--config.train.num_steps=2", "--config.encoder.image_size=32",
                         "--config.data.num_train=32", "--config.data.num_val=16"))
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      f"error: no space left on device writing the vocabulary and config ({workdir}); free "
      "some space and re-run")
  assert "Traceback" not in result.stderr
