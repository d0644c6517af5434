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
