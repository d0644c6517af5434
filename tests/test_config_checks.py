"""Config values are checked at start-up, one line per bad field, before any work."""

import dataclasses
import importlib

import pytest
from helpers import run  # a script in a subprocess from the repository root

from jaxcap.decoding import options as decode_options
from jaxcap.training import config_checks
from jaxcap.training import loop as trainer

CONFIGS = ["quickstart", "coco", "jsonl", "flickr8k"]


def config(name="quickstart", **overrides):
  c = importlib.import_module(f"configs.{name}").get_config()
  for field, value in overrides.items():
    section, key = field.split("__")
    c[section][key] = value
  return c


@pytest.mark.parametrize("name", CONFIGS)
def test_shipped_configs_pass(name):
  config_checks.validate(config(name))


BAD = [  # (field as section__key, value, what the line must say)
    ("train__batch_size", 0, "train.batch_size = 0: must be an integer >= 1"),
    ("train__batch_size", -4, "train.batch_size = -4: must be an integer >= 1"),
    ("model__units", 0, "model.units = 0: must be an integer >= 1"),
    ("train__learning_rate", -0.01, "train.learning_rate = -0.01: must be a number > 0"),
    ("train__learning_rate", float("nan"), "train.learning_rate = nan: must be a number > 0"),
    ("train__num_steps", 0, "train.num_steps = 0: must be an integer >= 1"),
    ("train__log_every", 0, "train.log_every = 0: must be an integer >= 1"),
    ("train__eval_every", -1, "train.eval_every = -1: must be an integer >= 1"),
    ("train__checkpoint_every", 0, "train.checkpoint_every = 0: must be an integer >= 1"),
    ("model__max_length", 1, "model.max_length = 1: must be an integer >= 2"),
    ("model__vocab_size", 3, "model.vocab_size = 3: must be an integer >= 4"),
    ("encoder__image_size", 16, "encoder.image_size = 16: must be 0 (the backbone's own"),
    ("encoder__batch_size", 0, "encoder.batch_size = 0: must be an integer >= 1"),
    ("train__compute_dtype", "float16",
     "train.compute_dtype = 'float16': must be one of 'float32', 'bfloat16'"),
    ("train__lr_schedule", "linear",
     "train.lr_schedule = 'linear': must be one of 'constant', 'cosine'"),
    ("train__length_buckets", (8, -2), "train.length_buckets = (8, -2): must be a list of"),
    ("train__b2", 1.0, "train.b2 = 1.0: must be a number >= 0 and < 1"),
    ("encoder__name", "resnet", "encoder.name = 'resnet': must be one of 'mobilenet_v2'"),
    ("data__source", "csv", "data.source = 'csv': must be one of 'shapes'"),
    ("data__num_train", 0, "data.num_train = 0: must be an integer >= 1"),
    ("decoding__top_k", -3, "decoding.top_k = -3: must be an integer >= 0"),
    ("decoding__temperature", float("nan"), "decoding.temperature = nan: must be a number > 0"),
    ("decoding__method", "nucleus", "decoding.method = 'nucleus': must be one of 'greedy'"),
    ("model__decoder", "lstm", "model.decoder = 'lstm': must be one of 'gru'"),
    ("model__dropout", 1.0, "model.dropout = 1.0: must be a number >= 0 and < 1"),
    ("train__scst_steps", -1, "train.scst_steps = -1: must be an integer >= 0"),
    ("train__scst_samples", 0, "train.scst_samples = 0: must be an integer >= 1"),
    ("train__scst_baseline", "zero", "train.scst_baseline = 'zero': must be one of 'greedy'"),
    ("train__scst_learning_rate", 0.0, "train.scst_learning_rate = 0.0: must be a number > 0"),
    ("train__scst_temperature", -1.0, "train.scst_temperature = -1.0: must be a number > 0"),
    ("train__scst_top_k", -1, "train.scst_top_k = -1: must be an integer >= 0"),
]


@pytest.mark.parametrize("field,value,message", BAD)
def test_each_bad_value_is_one_line_naming_field_and_range(field, value, message):
  with pytest.raises(ValueError) as e:
    config_checks.validate(config(**{field: value}))
  lines = str(e.value).splitlines()
  assert lines[0] == "invalid config:" and len(lines) == 2
  assert lines[1].strip().startswith(message), lines[1]


@pytest.mark.parametrize("name,value", [("method", "nucleus"), ("top_k", -3),
                                        ("temperature", 0.0), ("beam_size", 0), ("alpha", -1.0)])
def test_decoding_section_is_checked_by_decode_options_ranges(name, value):
  # One statement of each range: a config's `decoding` line is DecodeOptions' own message.
  assert set(decode_options.RANGES) == {
      f.name for f in dataclasses.fields(decode_options.DecodeOptions)}
  with pytest.raises(ValueError) as own:
    decode_options.DecodeOptions(**{name: value})
  with pytest.raises(ValueError) as checked:
    config_checks.validate(config(**{f"decoding__{name}": value}))
  assert str(checked.value).splitlines()[1:] == [f"  decoding.{own.value}"]


def test_every_problem_at_once():
  with pytest.raises(ValueError) as e:
    config_checks.validate(config(train__batch_size=0, model__units=0,
                                  train__learning_rate=-0.01))
  assert len(str(e.value).splitlines()) == 4


@pytest.mark.parametrize("fields,message", [
    ({"train__length_buckets": (8, 40)}, "train.length_buckets = (8, 40): must be <= "
     "model.max_length (16)"),
    ({"encoder__name": "inception_resnet_v2", "encoder__image_size": 64},
     "encoder.image_size = 64: must be 0 or >= 75 for inception_resnet_v2"),
    ({"model__num_layers": 3}, "model.num_layers: not used by decoder 'gru'"),
    ({"model__decoder": "transformer", "model__num_heads": 3},
     "model.units (256) must be a multiple of model.num_heads (3)"),
    ({"train__scst_baseline": "mean", "train__scst_samples": 1},
     "train.scst_baseline = 'mean' (the other samples' mean): needs train.scst_samples >= 2"),
])
def test_relations_between_fields(fields, message):
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
    config_checks.validate(config(**fields))


def test_fractions_leave_training_images():
  with pytest.raises(ValueError, match="data.val_fraction \\+ data.test_fraction = 1.1"):
    config_checks.validate(config("jsonl", data__val_fraction=0.6, data__test_fraction=0.5))


def test_missing_required_field():
  c = config()
  del c.train["num_steps"]
  with pytest.raises(ValueError, match="train.num_steps: missing; must be an integer >= 1"):
    config_checks.validate(c)


def test_trainer_checks_before_any_work(tmp_path):
  with pytest.raises(ValueError, match="model.units = 0"):
    trainer.train_and_evaluate(config(model__units=0), str(tmp_path / "w"))
  assert not (tmp_path / "w").exists()


@pytest.mark.slow
@pytest.mark.parametrize("args,line", [
    (["--config", "configs/nope.py"], "error: config file not found: configs/nope.py"),
    (["--config", "configs/quickstart.py", "--config.train.bogus=1"],
     "error: --config.train.bogus=1: the config has no such field"),
    (["--config", "configs/quickstart.py", "--config.train.batch_size=0",
      "--config.model.units=0"],
     "error: invalid config:\n  model.units = 0: must be an integer >= 1\n"
     "  train.batch_size = 0: must be an integer >= 1"),
])
def test_train_py_says_it_in_one_line(tmp_path, args, line):
  result = run(["train.py", "--workdir", str(tmp_path / "w")] + args)
  assert result.returncode == 1
  assert result.stderr.strip() == line
  assert not (tmp_path / "w").exists()
