"""train.py and sample.py end to end on a tiny shapes run: resume, mismatch, bad input.

Crashes (SIGKILL at fixed points) and damaged checkpoints: test_resume.py."""

import json

import pytest
from tensorboard.backend.event_processing import event_accumulator

from helpers import run, train_cmd  # train.py / sample.py in a subprocess on tiny shapes
from jaxcap.training import checkpoints

pytestmark = pytest.mark.slow  # train.py in subprocesses


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("run")
  result = run(train_cmd(workdir, "--config.train.num_steps=8"))
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir


def test_training_writes_checkpoint_logs_and_vocab(trained):
  lines = [json.loads(l) for l in (trained / "metrics.jsonl").read_text().splitlines()]
  assert [l["step"] for l in lines] == [2, 4, 6, 8]
  assert "val_loss" in lines[1] and "val_exact_match" in lines[-1]
  assert lines[-1]["train_loss"] < lines[0]["train_loss"]
  assert json.loads((trained / "vocab.json").read_text())["tokens"][:2] == ["", "[UNK]"]
  assert checkpoints.Checkpoints(trained, read_only=True).latest_step() == 8
  # The same scalars in TensorBoard's event files, read by TensorBoard's own reader.
  events = event_accumulator.EventAccumulator(str(trained))
  events.Reload()
  for key in ("train_loss", "learning_rate", "steps_per_sec", "val_loss", "val_bleu4",
              "val_cider", "val_exact_match"):
    logged = [l for l in lines if key in l]
    assert [e.step for e in events.Scalars(key)] == [l["step"] for l in logged], key
    assert [e.value for e in events.Scalars(key)] == pytest.approx([l[key] for l in logged]), key
  assert [e.step for e in events.Scalars("val_cider")] == [4, 8]
  assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")


def test_rerun_resumes_from_latest(trained, tmp_path):
  result = run(train_cmd(trained, "--config.train.num_steps=12"))
  assert result.returncode == 0, result.stderr[-3000:]
  assert "resumed from step 8" in result.stdout
  steps = [json.loads(l)["step"] for l in (trained / "metrics.jsonl").read_text().splitlines()]
  assert steps[-2:] == [10, 12]


def test_mismatched_config_gives_clear_error(trained):
  result = run(train_cmd(trained, "--config.train.num_steps=20", "--config.model.units=32"))
  assert result.returncode != 0
  assert "does not match" in result.stderr and "units: checkpoint 16, config 32" in result.stderr
  assert "Traceback" not in result.stderr


def test_sample_captions_images_and_reports_bad_ones(trained, tmp_path):
  from jaxcap.data import shapes
  written = shapes.write_examples(tmp_path, seed=5, start=0, count=2)
  bad = tmp_path / "broken.jpg"
  bad.write_bytes(b"not an image at all")
  missing = tmp_path / "missing.png"
  paths = [str(p) for p, _ in written] + [str(bad), str(missing)]
  result = run(["sample.py", "--workdir", str(trained), "--json", "--image"] + paths)
  assert result.returncode == 1
  assert "Traceback" not in result.stderr
  loaded, *errors = result.stderr.strip().splitlines()
  assert loaded.startswith(f"loaded {trained}/best/")  # which checkpoint answers
  errors = [l for l in errors if l.startswith("error:")]
  assert len(errors) == 2 and str(bad) in errors[0] and str(missing) in errors[1]
  assert result.stderr.count("decoding: greedy") == 1  # every tool's default, said once
  rows = [json.loads(l) for l in result.stdout.strip().splitlines()]
  assert [r["image"] for r in rows] == paths[:2]
  assert all(isinstance(r["caption"], str) for r in rows)


def test_evaluate_captions_a_split_and_scores_it(trained):
  result = run(["evaluate.py", "--workdir", str(trained), "--split", "val", "--decoding", "beam",
                "--beam_size", "2", "--no_java", "--json", "--checkpoint", "latest"])
  assert result.returncode == 0, result.stderr[-3000:]
  latest = checkpoints.Checkpoints(trained, read_only=True).latest_step()
  assert f"loaded {trained}/checkpoints/{latest} (step {latest})" in result.stderr
  scores = json.loads(result.stdout)
  assert set(scores) == {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"}
  assert scores["METEOR"] is None and 0 <= scores["Bleu_1"] <= 1
  rows = json.loads((trained / "results_val_beam.json").read_text())
  assert len(rows) == 32 and all(r["image_id"].startswith("shapes/") for r in rows)
  assert (trained / "best").is_dir()
