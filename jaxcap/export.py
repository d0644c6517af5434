"""A trained model in one file, and the model card that goes with it.

    python -m jaxcap export WORKDIR FILE        (or `jaxcap export`)
    Captioner.load(FILE)                        the same captions, no workdir needed

The file is MessagePack (flax.serialization; no pickle, so loading runs no code):

    {"format": "jaxcap-model", "version": 1,
     "header": JSON text: {"spec": decoder description, "vocab": [tokens],
                           "encoder": {"name", "weights", "image_size", "resize"},
                           "decoding": default DecodeOptions, "config": training config,
                           "card": model card, "step": training step},
     "params": the decoder parameters (nested dicts of arrays)}

The encoder is frozen ImageNet weights from an installed package: the file names it (and the
weights path the config gave, if any) and the loader reads the weights as training did.
`read_header` reads the header without building the params' arrays on a device.
"""

from __future__ import annotations

import json
import math
import os
import time

import numpy as np
from flax import serialization

from jaxcap import compat
from jaxcap.evaluation.metrics import CIDER_SCALE  # noqa: F401  (also read by captioner)

FORMAT = "jaxcap-model"
VERSION = 1

# How the card's one-line summary names a data source.
_SOURCE_NAMES = {"shapes": "synthetic shapes", "coco_json": "COCO captions",
                 "tfds_coco": "COCO captions (TFDS)", "karpathy": "Karpathy-split captions"}


def write(path: str, params, header: dict) -> None:
  """Writes params (a pytree of arrays) and a JSON-able header to `path`, atomically."""
  payload = {"format": FORMAT, "version": VERSION, "header": json.dumps(header),
             "params": _to_numpy(params)}
  data = serialization.msgpack_serialize(payload)
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  temporary = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
  with open(temporary, "wb") as f:
    f.write(data)
  os.replace(temporary, path)


def read(path: str) -> tuple[dict, dict]:
  """(params as NumPy arrays, header) of a file `write` wrote.

  Raises ValueError naming the file when it is not one (FileNotFoundError when missing).
  """
  with open(path, "rb") as f:
    data = f.read()
  try:
    payload = serialization.msgpack_restore(data)
  except Exception as e:  # pylint: disable=broad-except  (msgpack raises many kinds)
    raise ValueError(f"{path}: not a jaxcap model file (not MessagePack: "
                     f"{type(e).__name__})") from None
  if not isinstance(payload, dict) or payload.get("format") != FORMAT:
    raise ValueError(f"{path}: not a jaxcap model file (write one with "
                     "`python -m jaxcap export WORKDIR FILE`)")
  if payload.get("version") != VERSION:
    raise ValueError(f"{path}: model file version {payload.get('version')!r}; this jaxcap "
                     f"reads version {VERSION}")
  return payload["params"], json.loads(payload["header"])


def _to_numpy(tree):
  if isinstance(tree, dict):
    return {k: _to_numpy(v) for k, v in tree.items()}
  return np.asarray(tree)


def best_validation(workdir: str, step: int) -> dict:
  """The validation scores logged at `step` in metrics.jsonl (else the row of the best
  validation CIDEr up to `step`), with its step; {} when none was logged."""
  path = os.path.join(workdir, "metrics.jsonl")
  rows = []
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      for line in f:
        try:
          row = json.loads(line)
        except ValueError:
          continue  # a line cut short by a kill
        if "val_cider" in row and row.get("step", math.inf) <= step:
          rows.append(row)
  if not rows:
    return {}
  at_step = [r for r in rows if r["step"] == step]
  row = at_step[-1] if at_step else max(rows, key=lambda r: r["val_cider"])
  return {k: v for k, v in row.items() if k == "step" or k.startswith("val_")}


def model_card(workdir: str, meta: dict, step: int, trained: float | None = None) -> dict:
  """A small description of a workdir's model: data, size, steps, validation scores, date.

  `trained`: when the checkpoint was written (seconds since the epoch).
  """
  config = meta["config"]
  data = config["data"]
  vocab = meta["vocab"]
  words = sum(1 for t in vocab if t not in ("", "[UNK]", "<start>", "<end>"))
  validation = best_validation(workdir, step)
  card = {
      "data": {"source": data["source"],
               **{k: v for k, v in data.items() if k.startswith("num_") or k == "path"}},
      "vocabulary": {"tokens": len(vocab), "words": words},
      "decoder": (meta["spec"]["kind"] if "spec" in meta
                  else compat.decoder_spec_from_sizes(meta).kind),
      "encoder": meta["encoder"],
      "steps": step,
      "validation": validation,
      "trained": time.strftime("%Y-%m-%d", time.localtime(trained)) if trained else None,
  }
  card["summary"] = summary(card)
  return card


def summary(card: dict) -> str:
  """One line: "gru decoder trained on synthetic shapes (12000 images), 13 words, 2000
  steps, validation CIDEr 455.2"."""
  data = card["data"]
  source = _SOURCE_NAMES.get(data["source"], data["source"])
  if data["source"] == "jsonl" and data.get("path"):
    source = os.path.basename(data["path"])
  if data.get("num_train"):
    source += f" ({data['num_train']} images)"
  text = (f"{card['decoder']} decoder trained on {source}, {card['vocabulary']['words']} "
          f"words, {card['steps']} steps")
  cider = card.get("validation", {}).get("val_cider")
  if cider is not None:
    text += f", validation CIDEr {cider * CIDER_SCALE:.1f}"
  return text
