"""A model in one file: `python -m jaxcap export W F`, then Captioner.load(F) and
`sample.py --model F` with the workdir moved away give the workdir's captions."""

import csv
import json
import os
import shutil

import pytest
from helpers import run, train_cmd  # train.py in a subprocess from the repository root

from jaxcap import Captioner, export
from jaxcap.data import shapes

pytestmark = pytest.mark.slow  # trains a tiny model, runs the tools in subprocesses


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("export_run") / "workdir"
  result = run(train_cmd(workdir, "--config.train.num_steps=8"))
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir


@pytest.fixture(scope="module")
def images(tmp_path_factory):
  folder = tmp_path_factory.mktemp("images")
  shapes.write_examples(folder, seed=5, start=0, count=3)
  shapes.write_examples(folder / "nested", seed=5, start=3, count=2)
  (folder / "notes.txt").write_text("not an image")
  return folder


def test_export_then_load_without_the_workdir(trained, images, tmp_path):
  # A folder's own files first, then its subfolders', each sorted.
  paths = [str(p) for folder in (images, images / "nested")
           for p in sorted(folder.glob("*.png"))]
  from_workdir = Captioner.load(trained)
  expected = from_workdir.caption(paths)
  model = tmp_path / "tiny.jaxcap"
  result = run(["-m", "jaxcap", "export", str(trained), str(model)])
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Traceback" not in result.stderr and "read_only" not in result.stderr
  card = json.loads(result.stdout)
  assert card["data"]["source"] == "shapes" and card["data"]["num_train"] == 96
  assert card["steps"] == from_workdir.step and card["vocabulary"]["words"] >= 1
  assert card["summary"].startswith("gru decoder trained on synthetic shapes (96 images)")

  # The workdir moved away: the file alone.
  moved = tmp_path / "moved"
  shutil.move(str(trained), moved)
  try:
    loaded = Captioner.load(model)
    assert loaded.summary == card["summary"] and loaded.options.method == "greedy"
    assert (loaded.image_size, loaded.resize_method) == (from_workdir.image_size,
                                                         from_workdir.resize_method)
    got = loaded.caption(paths)
    assert [r.text for r in got] == [r.text for r in expected]
    assert [r.log_prob for r in got] == pytest.approx([r.log_prob for r in expected], abs=1e-5)

    out = tmp_path / "captions.jsonl"
    result = run(["sample.py", "--model", str(model), "--image", str(images), "--output",
                  str(out)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"model: {card['summary']}" in result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["image"] for r in rows] == paths  # the folder, recursively, images only
    assert [r["caption"] for r in rows] == [r.text for r in expected]
  finally:
    shutil.move(str(moved), trained)


def test_sample_folder_to_csv_and_jaxcap_command(trained, images, tmp_path):
  out = tmp_path / "out.csv"
  result = run(["-m", "jaxcap", "sample", "--workdir", str(trained), "--image", str(images),
                "--output", str(out)])
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stderr.count("decoding: greedy") == 1 and "model: gru decoder" in result.stderr
  with open(out, newline="") as f:
    rows = list(csv.reader(f))
  assert rows[0] == ["image", "caption"] and len(rows) == 1 + 5
  assert all(os.path.exists(image) and caption for image, caption in rows[1:])
  assert f"wrote 5 captions to {out}" in result.stderr


def test_bad_files_are_one_line(tmp_path):
  junk = tmp_path / "junk.jaxcap"
  junk.write_bytes(b"\x00\x01 not msgpack at all")
  with pytest.raises(ValueError, match="not a jaxcap model file"):
    export.read(str(junk))
  result = run(["sample.py", "--model", str(junk), "--image", str(junk)])
  assert result.returncode == 1 and "Traceback" not in result.stderr
  assert "not a jaxcap model file" in result.stderr
  result = run(["sample.py", "--image", "x.png", "--output", str(tmp_path / "out.txt")])
  assert result.returncode == 2 and ".jsonl or .csv" in result.stderr
