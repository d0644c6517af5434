"""jaxcap: image captioning in JAX/Flax.

The public surface (each name loads on first use, so `import jaxcap` stays cheap):

    Captioner        a trained model: load a workdir or an exported file, caption images
    DecodeOptions    greedy | sample | beam, and their settings
    DecoderSpec      what a decoder is (kind and sizes); saved with every checkpoint
    decoders         the decoder functions: init, teacher_forced, prepare, step, project
    decode           features -> token ids in one compiled loop
    init_train_state, TrainStep, TrainState
                     training from plain host arrays (the data-parallel sharding is inside)

The rooms: `model` (layers, decoders, encoders), `decoding`, `data`, `training`,
`evaluation`, `serving`.
"""

import importlib

from jaxcap import compat

compat.install_module_aliases()

_PUBLIC = {
    "Captioner": ("jaxcap.captioner", "Captioner"),
    "DecodeOptions": ("jaxcap.decoding.options", "DecodeOptions"),
    "DecoderSpec": ("jaxcap.model.decoders", "DecoderSpec"),
    "decoders": ("jaxcap.model.decoders", None),
    "decode": ("jaxcap.decoding.loop", "decode"),
    "init_train_state": ("jaxcap.training.steps", "init_train_state"),
    "TrainStep": ("jaxcap.training.steps", "TrainStep"),
    "TrainState": ("jaxcap.training.steps", "TrainState"),
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
  if name not in _PUBLIC:
    raise AttributeError(f"module 'jaxcap' has no attribute {name!r}")
  module_name, attribute = _PUBLIC[name]
  module = importlib.import_module(module_name)
  return module if attribute is None else getattr(module, attribute)


def __dir__():
  return sorted(set(globals()) | set(_PUBLIC))
