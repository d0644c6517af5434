"""jaxcap.training.logs: what TensorBoard's own event reader finds in the files, and metrics.jsonl."""

import json

import pytest
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from jaxcap.training import logs

CONFIG = {"seed": 0, "train": {"learning_rate": 1e-3, "length_buckets": (8, 12),
                               "lr_schedule": "cosine"}, "model": {"grid": True}}


def read_events(logdir):
  """TensorBoard's reader over every event file in `logdir`, as `tensorboard --logdir` reads."""
  acc = event_accumulator.EventAccumulator(str(logdir))
  acc.Reload()
  return acc


def scalars(acc, tag):
  return [(e.step, round(e.value, 6)) for e in acc.Scalars(tag)]


@pytest.mark.slow
def test_scalars_and_config_read_back(tmp_path):
  writer = logs.Writer(str(tmp_path), CONFIG)
  writer.write(10, {"train_loss": 2.5, "learning_rate": 1e-3, "steps_per_sec": 4.0})
  writer.write(20, {"train_loss": 1.75, "learning_rate": 5e-4, "steps_per_sec": 5.0,
                    "val_cider": 0.25, "val_bleu4": 0.125})
  writer.close()
  acc = read_events(tmp_path)
  assert scalars(acc, "train_loss") == [(10, 2.5), (20, 1.75)]
  assert scalars(acc, "learning_rate") == [(10, 0.001), (20, 0.0005)]
  assert scalars(acc, "val_cider") == [(20, 0.25)]
  # The config: flattened in the HPARAMS dashboard's session start, and as text.
  content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
  start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
  assert start.hparams["train.learning_rate"].number_value == 1e-3
  assert start.hparams["train.lr_schedule"].string_value == "cosine"
  assert start.hparams["train.length_buckets"].string_value == "(8, 12)"
  assert start.hparams["model.grid"].bool_value is True
  experiment = plugin_data_pb2.HParamsPluginData.FromString(
      acc.PluginTagToContent("hparams")["_hparams_/experiment"]).experiment
  assert [m.name.tag for m in experiment.metric_infos] == list(logs.HPARAM_METRICS)
  assert "config/text_summary" in acc.Tags()["tensors"]
  lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert lines == [{"step": 10, "train_loss": 2.5, "learning_rate": 1e-3, "steps_per_sec": 4.0},
                   {"step": 20, "train_loss": 1.75, "learning_rate": 5e-4,
                    "steps_per_sec": 5.0, "val_cider": 0.25, "val_bleu4": 0.125}]


@pytest.mark.slow
def test_resumed_run_replaces_the_steps_after_its_checkpoint(tmp_path):
  first = logs.Writer(str(tmp_path), CONFIG)
  for step in (2, 4, 6):  # steps 5-6 are lost: the run dies after its checkpoint at step 4
    first.write(step, {"train_loss": float(step)})
  first.close()
  resumed = logs.Writer(str(tmp_path), CONFIG, start_step=4)
  resumed.write(6, {"train_loss": 60.0})
  resumed.write(8, {"train_loss": 80.0})
  resumed.close()
  assert scalars(read_events(tmp_path), "train_loss") == [(2, 2.0), (4, 4.0), (6, 60.0),
                                                           (8, 80.0)]
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert rows == [{"step": s, "train_loss": v} for s, v in ((2, 2), (4, 4), (6, 60), (8, 80))]


def test_drop_rows_after_a_step_and_a_torn_line(tmp_path):
  rows = [{"step": s, "train_loss": 1.0 / s} for s in (2, 4, 6, 8)]
  path = tmp_path / "metrics.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 10, "tr')
  assert logs.drop_rows_after(str(path), 4) == 3
  assert [json.loads(l) for l in path.read_text().splitlines()] == rows[:2]
  assert logs.drop_rows_after(str(path), 4) == 0
  assert logs.drop_rows_after(str(tmp_path / "none.jsonl"), 0) == 0


def test_disabled_writer_writes_nothing(tmp_path):
  writer = logs.Writer(str(tmp_path), CONFIG, enabled=False)
  writer.write(1, {"train_loss": 1.0})
  writer.close()
  assert not list(tmp_path.iterdir())


def test_flatten():
  assert logs.flatten(CONFIG) == {"seed": 0, "train.learning_rate": 1e-3,
                                  "train.length_buckets": "(8, 12)",
                                  "train.lr_schedule": "cosine", "model.grid": True}
