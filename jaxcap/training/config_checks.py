"""Config checks at start-up: every bad value is reported, one line each naming the field
and what it allows, before any image is encoded.

A field is added with one `Check` row in `CHECKS` (a dotted name and its `ranges` entry: the
allowed range in words, a test of the value); checks between fields go in `_relations`. The
`decoding` section's rows come from `decode_options.RANGES`, which `DecodeOptions` checks
itself against.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from jaxcap import training
from jaxcap.data import image_files, sources
from jaxcap.decoding import options as decode_options
from jaxcap.model import decoders, encoders
from jaxcap.ranges import BOOL, INT, STRING, integer, is_int, number, one_of


@dataclasses.dataclass(frozen=True)
class Check:
  field: str  # dotted, e.g. "train.batch_size"
  allowed: str  # completes "must be ...", e.g. "an integer >= 1"
  ok: Callable[[Any], bool]
  required: bool = True  # False: checked only when the config has it (source-specific ones)


IMAGE_SIZE = ("0 (the backbone's own size) or an integer from 32 to 4096",
              lambda v: is_int(v) and (v == 0 or 32 <= v <= 4096))
BUCKETS = ("a list of integers >= 1 (e.g. (8, 12)), or () for none",
           lambda v: isinstance(v, (list, tuple)) and all(is_int(b) and b >= 1 for b in v))


def _rows(required: bool, *rows) -> list[Check]:
  return [Check(field, allowed, ok, required) for field, (allowed, ok) in rows]


CHECKS: list[Check] = [
    *_rows(True,
           ("seed", INT),
           ("data.source", one_of(*sources.SOURCES)),
           ("encoder.name", one_of(*encoders.NAMES)),
           ("encoder.batch_size", integer(1)),
           ("model.units", integer(1)),
           ("model.vocab_size", integer(4)),  # padding, [UNK], <start>, <end>
           ("model.max_length", integer(2)),  # <start> and <end>
           ("train.batch_size", integer(1)),
           ("train.num_steps", integer(1)),
           ("train.learning_rate", number(0, low_open=True)),
           ("train.lr_schedule", one_of(*training.LR_SCHEDULES)),
           ("train.b1", number(0, 1, high_open=True)),
           ("train.b2", number(0, 1, high_open=True)),
           ("train.eps", number(0, low_open=True)),
           ("train.length_buckets", BUCKETS),
           ("train.compute_dtype", one_of(*training.COMPUTE_DTYPES)),
           ("train.log_every", integer(1)),
           ("train.eval_every", integer(1)),
           ("train.eval_examples", integer(1)),
           ("train.checkpoint_every", integer(1)),
           ("train.keep_checkpoints", integer(1))),
    *_rows(False,
           ("data.seed", INT),
           ("data.num_train", integer(1)),
           ("data.num_val", integer(0)),
           ("data.num_test", integer(0)),
           ("data.val_fraction", number(0, 1, high_open=True)),
           ("data.test_fraction", number(0, 1, high_open=True)),
           ("data.all_captions", BOOL),
           ("data.use_restval", BOOL),
           ("data.cache", BOOL),
           ("data.cache_dir", STRING),
           ("data.shards", integer(0)),
           ("data.path", STRING),
           ("encoder.weights", STRING),
           ("encoder.resize", one_of(*image_files.RESIZE_METHODS)),
           ("encoder.image_size", IMAGE_SIZE),
           ("model.decoder", one_of(*decoders.REGISTRY)),
           # every decoder's options (0: the reading decoder's default)
           *((f"model.{name}", allowed) for name, allowed in decoders.OPTION_RANGES.items()),
           *((f"decoding.{name}", allowed) for name, allowed in decode_options.RANGES.items()),
           ("train.scst_steps", integer(0)),
           ("train.scst_batch_size", integer(0)),  # 0: train.batch_size
           ("train.scst_samples", integer(1)),
           ("train.scst_baseline", one_of("greedy", "mean")),
           ("train.scst_learning_rate", number(0, low_open=True)),
           ("train.scst_temperature", number(0, low_open=True)),
           ("train.scst_top_k", integer(0)),
           ("train.label_smoothing", number(0, 1, high_open=True)),
           ("train.weight_decay", number(0)),
           ("train.ema_decay", number(0, 1, high_open=True))),
]

_MISSING = object()


def _get(config, field: str):
  node = config
  for part in field.split("."):
    if not hasattr(node, "get") or part not in node:
      return _MISSING
    node = node[part]
  return node


def _relations(config) -> list[str]:
  """Problems between fields (each field alone already passed its check)."""
  problems = []
  max_length = config.model.max_length
  too_long = [b for b in config.train.length_buckets if b > max_length]
  if too_long:
    problems.append(f"train.length_buckets = {tuple(config.train.length_buckets)}: must be "
                    f"<= model.max_length ({max_length}); {too_long} are not")
  val, test = _get(config, "data.val_fraction"), _get(config, "data.test_fraction")
  if val is not _MISSING and test is not _MISSING and val + test >= 1:
    problems.append(f"data.val_fraction + data.test_fraction = {val + test:g}: must be < 1 "
                    "(leave some images for training)")
  shards = _get(config, "data.shards")
  if shards is not _MISSING and shards and config.train.batch_size % shards:
    problems.append(f"train.batch_size = {config.train.batch_size}: must be a multiple of "
                    f"data.shards ({shards}): each batch takes as many examples from each "
                    "shard")
  if _get(config, "train.scst_baseline") == "mean" and _get(config, "train.scst_samples") == 1:
    problems.append("train.scst_baseline = 'mean' (the other samples' mean): needs "
                    "train.scst_samples >= 2")
  size = config.encoder.get("image_size", 0)
  least = encoders.get(config.encoder.name).MIN_IMAGE_SIZE
  if size and size < least:
    problems.append(f"encoder.image_size = {size}: must be 0 or >= {least} for "
                    f"{config.encoder.name}")
  try:  # options of one decoder given to another; sizes that do not fit (heads, units)
    decoders.spec_from_config(config.model, vocab_size=config.model.vocab_size,
                              feature_dim=1, positions=1)
  except ValueError as e:
    problems.append(str(e))
  return problems


def validate(config) -> None:
  """Raises ValueError listing every field outside its range, one per line."""
  problems = []
  for check in CHECKS:
    value = _get(config, check.field)
    if value is _MISSING:
      if check.required:
        problems.append(f"{check.field}: missing; must be {check.allowed}")
    elif not check.ok(value):
      problems.append(f"{check.field} = {value!r}: must be {check.allowed}")
  if not problems:
    problems = _relations(config)
  if problems:
    raise ValueError("invalid config:\n  " + "\n  ".join(problems))
