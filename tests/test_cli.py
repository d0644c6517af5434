"""jaxcap.cli: the --checkpoint flag the scripts that load a workdir share."""

import argparse

import pytest

from jaxcap import cli


def test_checkpoint_flag():
  parser = argparse.ArgumentParser()
  cli.add_checkpoint_flag(parser)
  assert parser.parse_args([]).checkpoint is None  # auto
  for text, value in (("best", "best"), ("latest", "latest"), ("40", 40), ("auto", None)):
    assert parser.parse_args(["--checkpoint", text]).checkpoint == value
  for bad in ("newest", "-3", "4.0"):
    with pytest.raises(SystemExit):
      parser.parse_args(["--checkpoint", bad])


def test_jaxcap_help_lists_the_five_commands():
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  for args in (["--help"], []):
    result = subprocess.run([sys.executable, "-m", "jaxcap", *args], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == (0 if args else 2)
    for command in ("train", "sample", "evaluate", "serve", "export"):
      assert f"\n  {command} " in result.stdout
  result = subprocess.run([sys.executable, "-m", "jaxcap", "fly"], capture_output=True,
                          text=True, timeout=60)
  assert result.returncode == 2 and "unknown command 'fly'" in result.stderr


def test_every_command_delegates_its_help():
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  for command in ("sample", "evaluate", "serve", "export"):
    result = subprocess.run([sys.executable, "-m", "jaxcap", command, "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and f"usage: jaxcap {command}" in result.stdout
