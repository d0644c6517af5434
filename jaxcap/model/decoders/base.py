"""What a decoder module provides (`Decoder`), and the pieces of checking that several share.

A decoder is a module with the members `Decoder` names; the registry in `__init__.py`
(`REGISTRY`, kind -> module) is the one list of them. Nothing outside the decoder package
names a kind: the loops, the train step and SCST call the package's dispatchers
(`decoders.step(params, spec, ...)`), which look the module up by `spec.kind`.

The options are `DecoderSpec`'s fields after the sizes; each module says which it reads
(`OPTIONS`) and the value a config's 0 stands for. Their config ranges are stated once,
here (`OPTION_RANGES`), since two decoders may read the same option.
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol, runtime_checkable

import jax

from jaxcap import ranges
from jaxcap.model.layers import Params  # noqa: F401  (decoder modules read it from here)
DEFAULT_NUM_HEADS = 4
DEFAULT_NUM_LAYERS = 2
DROPOUT = ranges.number(0, 1, high_open=True)  # a rate; config_checks reads it too
# Every option's range in a config (0 = the reading decoder's default, see `OPTIONS`).
OPTION_RANGES: dict[str, ranges.Range] = {
    "grid_position_embedding": ranges.BOOL,
    "init_hidden_from_image": ranges.BOOL,
    "num_heads": ranges.integer(0),
    "key_dim": ranges.integer(0),
    "num_layers": ranges.integer(0),
    "mlp_dim": ranges.integer(0),
    "dropout": DROPOUT,
    # Small-data regularisers (off = 0). The GRUs': dropout on the word embeddings and
    # between the GRU's output and the attention; every decoder's (`COMMON_OPTIONS`):
    # dropout on the outputs before the vocabulary projection, and the projection tied to
    # the embedding (its kernel is the embedding transposed).
    "embedding_dropout": DROPOUT,
    "gru_output_dropout": DROPOUT,
    "output_dropout": DROPOUT,
    "tie_embedding": ranges.BOOL,
}
# Options every decoder reads (the package applies them: `decoders.project`,
# `decoders.teacher_forced`), with what 0 means.
COMMON_OPTIONS = {"output_dropout": 0.0, "tie_embedding": False}
DROPOUT_OPTIONS = ("dropout", "embedding_dropout", "gru_output_dropout", "output_dropout")
# Options a config may set for one decoder while training another (the shipped configs turn
# them on for the kind that reads them): `spec_from_config` leaves them out for the others.
# Any other option set for a kind that does not read it would be silently ignored, so it is
# an error.
CONFIG_MAY_HOLD = ("grid_position_embedding", "init_hidden_from_image", "dropout",
                   "embedding_dropout", "gru_output_dropout")


@runtime_checkable
class Decoder(Protocol):
  """The members of a decoder module. Shapes: B batch, T tokens, P grid positions, D encoder
  features, U the decoder's output width (`spec.units`), L `max_length`.

  `outputs` stop before the vocabulary projection, which all decoders share (params['logits'],
  {'kernel': (U, V), 'bias': (V,)}, applied by the package's `project`).
  """

  # The `DecoderSpec` options this decoder reads -> what 0 (or absent) in a config means.
  # Options it does not list must stay at their zero value in a spec.
  OPTIONS: Mapping[str, Any]

  def check(self, spec) -> list[str]:
    """Problems with a spec of this kind, beyond the sizes and unread options the package
    checks; one message each, naming the config field (`model.num_heads ...`)."""

  def init(self, key: jax.Array, spec) -> Params:
    """Fresh parameters."""

  def teacher_forced(self, params: Params, spec, features: jax.Array, tokens: jax.Array,
                     dropout_rng: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """features (B, P, D), tokens (B, T) -> outputs (B, T, U), attention (B, T, P).
    `dropout_rng` None: no dropout."""

  def prepare(self, params: Params, spec, features: jax.Array) -> Any:
    """features (B, P, D) -> the context: a pytree computed once per image, holding at least
    'grid' (B, P, U)."""

  def initial_cache(self, params: Params, spec, context: Any, max_length: int) -> Any:
    """The decoding state before the first token: a pytree whose leaves are (B, ...)."""

  def step(self, params: Params, spec, context: Any, cache: Any, tokens: jax.Array,
           index: jax.Array) -> tuple[jax.Array, Any, jax.Array]:
    """tokens (B,) at position `index` () -> outputs (B, U), the new cache, attention (B, P)."""

  def attention_description(self, spec) -> str:
    """What the attention maps it returns show, for figures."""


def check_heads(spec) -> list[str]:
  """Multi-head attention's rules: heads >= 1; units split evenly unless key_dim is set."""
  if spec.num_heads < 1:
    return [f"model.num_heads must be >= 1 for decoder {spec.kind!r}, not {spec.num_heads}"]
  if not spec.key_dim and spec.units % spec.num_heads:
    return [f"model.units ({spec.units}) must be a multiple of model.num_heads "
            f"({spec.num_heads}), or set model.key_dim"]
  return []


def check_positions(spec, needed_by: str) -> list[str]:
  """The grid size, for decoders (or options) with a table per grid position."""
  if spec.positions < 1:
    return [f"positions (the image grid size) must be >= 1: {needed_by} needs it"]
  return []
