"""Compatibility with what jaxcap was before its current layout: one place, each shim named.

Module paths. Until 0.2 the package was flat (`jaxcap.decoders`, `jaxcap.inference`,
`jaxcap.encoders.mobilenet_v2`, ...). `install_module_aliases` (run by `jaxcap/__init__`) makes
each old path import the module that now holds its code, so scripts written against the old
paths keep working for this release: `import jaxcap.decoders` gives `jaxcap.model.decoders`
itself, not a copy. `jaxcap.decoding` and `jaxcap.training` need no alias: they are packages
that re-export what the old modules held.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import os
import sys

# old path -> the module that holds its code now
MODULE_ALIASES = {
    "jaxcap.decoders": "jaxcap.model.decoders",
    "jaxcap.decoders.gru": "jaxcap.model.decoders.gru",
    "jaxcap.decoders.transformer": "jaxcap.model.decoders.transformer",
    "jaxcap.encoders": "jaxcap.model.encoders",
    "jaxcap.encoders.mobilenet_v2": "jaxcap.model.encoders.mobilenet_v2",
    "jaxcap.encoders.inception_resnet_v2": "jaxcap.model.encoders.inception_resnet_v2",
    "jaxcap.encoders.torch_checkpoint": "jaxcap.model.encoders.torch_checkpoint",
    "jaxcap.layers": "jaxcap.model.layers",
    "jaxcap.inference": "jaxcap.captioner",
    "jaxcap.decode_options": "jaxcap.decoding.options",
    "jaxcap.beam": "jaxcap.decoding.beam",
    "jaxcap.text": "jaxcap.data.text",
    "jaxcap.images": "jaxcap.data.image_files",
    "jaxcap.disk": "jaxcap.data.disk",
    "jaxcap.data.features": "jaxcap.data.build",
    "jaxcap.trainer": "jaxcap.training.loop",
    "jaxcap.checkpoints": "jaxcap.training.checkpoints",
    "jaxcap.workdir": "jaxcap.training.workdir",
    "jaxcap.logs": "jaxcap.training.logs",
    "jaxcap.faults": "jaxcap.training.faults",
    "jaxcap.scst": "jaxcap.training.scst",
    "jaxcap.config_checks": "jaxcap.training.config_checks",
    "jaxcap.metrics": "jaxcap.evaluation.metrics",
    "jaxcap.ptb_tokenizer": "jaxcap.evaluation.ptb_tokenizer",
    "jaxcap.viz": "jaxcap.evaluation.figures",
    "jaxcap.serve": "jaxcap.serving.app",
}


class _AliasLoader(importlib.abc.Loader):
  """Loads an old path as the module at its new one (the same module object)."""

  def __init__(self, target: str):
    self.target = target

  def create_module(self, spec):
    return importlib.import_module(self.target)

  def exec_module(self, module):
    pass  # the target module ran when it was imported


class _AliasFinder(importlib.abc.MetaPathFinder):

  def find_spec(self, fullname, path=None, target=None):
    new = MODULE_ALIASES.get(fullname)
    if new is None:
      return None
    return importlib.machinery.ModuleSpec(fullname, _AliasLoader(new),
                                          is_package=fullname in _PACKAGES)


_PACKAGES = {old.rsplit(".", 1)[0] for old in MODULE_ALIASES}


def install_module_aliases() -> None:
  """Lets the old module paths import (idempotent)."""
  if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _AliasFinder())


def decoder_spec_from_sizes(meta: dict):
  """The `DecoderSpec` of a pre-release workdir's meta, from before decoder kinds: it holds
  "sizes" {vocab_size, units, feature_dim, positions, position_embedding, init_hidden} (the
  seed's GRU, so kind "gru") and the config's model.max_length, where newer metas hold
  "spec" (`decoders.spec_from_meta` reads both)."""
  from jaxcap.model import decoders  # pylint: disable=g-import-not-at-top  (aliases load first)
  sizes = meta["sizes"]
  return decoders.DecoderSpec(
      kind="gru", vocab_size=sizes["vocab_size"], units=sizes["units"],
      feature_dim=sizes["feature_dim"], positions=sizes.get("positions", 0),
      max_length=meta["config"]["model"]["max_length"],
      grid_position_embedding=bool(sizes.get("position_embedding", False)),
      init_hidden_from_image=bool(sizes.get("init_hidden", False)))


# Pre-release workdirs and configs. Each shim below reads one thing that older jaxcap wrote
# and nothing writes any more; the modules that read workdirs and configs call it. This module
# imports no JAX (`import jaxcap` runs it), so the shims import what they need when called.

# Checkpoints written before params had their own item: a step directory held one `state`
# item, TrainState(step, params, opt_state), and an `rng` item (no longer needed).
LEGACY_STATE_ITEM = "state"


def is_legacy_state_checkpoint(step_dir: str) -> bool:
  """Whether the checkpoint step directory `step_dir` has the old single `state` item."""
  return os.path.isdir(os.path.join(step_dir, LEGACY_STATE_ITEM))


def restore_legacy_state(manager, step: int, params=None, opt_state=None):
  """(params, opt_state) of an old-layout checkpoint (`is_legacy_state_checkpoint`).

  `manager`: the orbax CheckpointManager of its folder. With templates (`params`,
  `opt_state`), both are restored shaped like them; without, params come back as saved and
  opt_state is None.
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  template = (None if params is None else
              {"step": 0, "params": params, "opt_state": opt_state})
  state = manager.restore(step, args=ocp.args.Composite(**{
      LEGACY_STATE_ITEM: ocp.args.StandardRestore(template)}))[LEGACY_STATE_ITEM]
  return state["params"], (None if params is None else state["opt_state"])


def decoding_of_sample_section(sample) -> dict:
  """`DecodeOptions` fields for a config older than its `decoding` section, whose `sample`
  section held {greedy: bool, top_k: int, temperature: float}."""
  return {"method": "greedy" if sample.greedy else "sample", "top_k": sample.top_k,
          "temperature": sample.temperature}


# Configs older than the `encoder.resize` field: jaxcap's only resize then was Pillow's.
RESIZE_BEFORE_ENCODER_RESIZE = "pil_bilinear"


def resize_of_encoder_config(encoder_config) -> str:
  """The config's `encoder.resize`, or the resize of configs written before that field
  (unchecked: see `jaxcap.data.image_files.resize_method_of`)."""
  return encoder_config.get("resize", RESIZE_BEFORE_ENCODER_RESIZE)
