"""Decoding: token ids from image features, in one compiled loop.

    options.py  DecodeOptions and the shared command-line flags (imports no JAX)
    loop.py     greedy and top-k/temperature sampling in one `lax.while_loop`; `decode`
    beam.py     beam search (length-normalised), also one `lax.while_loop`

`from jaxcap import decoding; decoding.decode(...)` reaches the loop's and the options' names;
they load on first use, so importing `jaxcap.decoding.options` stays free of JAX.
"""

import importlib

_MODULES = ("jaxcap.decoding.options", "jaxcap.decoding.loop")


def __getattr__(name: str):
  if name.startswith("__"):
    raise AttributeError(name)
  if name in ("options", "loop", "beam"):
    # `from jaxcap.decoding import options` asks for the attribute first: load that
    # submodule alone, not the loop (and JAX) while looking for a name `options`.
    return importlib.import_module(f"{__name__}.{name}")
  for module_name in _MODULES:
    module = importlib.import_module(module_name)
    if hasattr(module, name):
      return getattr(module, name)
  raise AttributeError(f"module 'jaxcap.decoding' has no attribute {name!r}")
