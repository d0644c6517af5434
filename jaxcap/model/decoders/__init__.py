"""The decoder family behind one interface, and the description (`DecoderSpec`) that picks one.

    "gru"          the seed: GRU -> dot attention over the grid -> add -> LayerNorm (gru.py)
    "gru_mha"      the seed's suggested next step: the same GRU with Keras's
                   MultiHeadAttention in place of its single-head dot attention (gru.py)
    "transformer"  (transformer.py) pre-LayerNorm blocks of causal self-attention,
                   cross-attention over the grid and an MLP, with a key/value cache

Every decoder module has the same five functions, and everything else (training, greedy,
sampling and beam search, SCST) uses only these, through the dispatchers below:

    init(key, spec) -> params
    teacher_forced(params, spec, features (B, P, D), tokens (B, T), dropout_rng)
        -> outputs (B, T, U), attention (B, T, P)
    prepare(params, spec, features (B, P, D)) -> context    per image, computed once
    initial_cache(params, spec, context, max_length) -> cache   a pytree, leaves (B, ...)
    step(params, spec, context, cache, tokens (B,), index ()) -> outputs (B, U), cache,
                                                                attention (B, P)

`outputs` stop before the vocabulary projection, which all decoders share (`project`): the
training loss projects only the positions that have a real target.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from jaxcap import ranges
from jaxcap.model import layers
from jaxcap.model.layers import Params

KINDS = ("gru", "gru_mha", "transformer")
GRU_KINDS = ("gru", "gru_mha")
# The options (`DecoderSpec` fields after the sizes) each kind reads; in a spec, the others
# stay at their zero value. The one statement of which decoder has which option.
OPTIONS = {
    "gru": ("grid_position_embedding", "init_hidden_from_image"),
    "gru_mha": ("grid_position_embedding", "init_hidden_from_image", "num_heads", "key_dim"),
    "transformer": ("num_heads", "key_dim", "num_layers", "mlp_dim", "dropout"),
}
# Options a config may set for one decoder while training another (the shipped configs turn
# them on for the kind that reads them): `spec_from_config` leaves them out for the others.
# Any other option set for a kind that does not read it would be silently ignored, so it is
# an error.
CONFIG_MAY_HOLD = ("grid_position_embedding", "init_hidden_from_image", "dropout")
DROPOUT = ranges.number(0, 1, high_open=True)  # a rate; config_checks reads it too


@dataclasses.dataclass(frozen=True)
class DecoderSpec:
  """What a decoder is: its kind and sizes. Saved in every checkpoint (`to_dict`).

  vocab_size (V), units (U: the model width), feature_dim (D: the encoder's), positions
  (P: the image grid size), max_length (L: tokens per caption, the Transformer's position
  table and cache size). The options, each read by some kinds only (`OPTIONS`): GRU-only
  grid_position_embedding, init_hidden_from_image; attention (gru_mha, transformer)
  num_heads, key_dim (per head; 0 = U / heads); transformer-only num_layers, mlp_dim
  (0 = 4 U), dropout.
  """
  kind: str
  vocab_size: int
  units: int
  feature_dim: int
  positions: int = 0
  max_length: int = 64
  grid_position_embedding: bool = False
  init_hidden_from_image: bool = False
  num_heads: int = 0
  key_dim: int = 0
  num_layers: int = 0
  mlp_dim: int = 0
  dropout: float = 0.0

  def __post_init__(self):
    problems = check(self)
    if problems:
      raise ValueError("; ".join(problems))

  @property
  def head_dim(self) -> int:
    return self.key_dim or self.units // max(self.num_heads, 1)

  @property
  def hidden_dim(self) -> int:
    return self.mlp_dim or 4 * self.units

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict) -> "DecoderSpec":
    return cls(**d)


DEFAULT_NUM_HEADS = 4
DEFAULT_NUM_LAYERS = 2
_ZERO_MEANS = {"num_heads": DEFAULT_NUM_HEADS, "num_layers": DEFAULT_NUM_LAYERS}  # in configs


def _unknown_kind(kind: str) -> str:
  return f"model.decoder must be one of {', '.join(KINDS)}, not {kind!r}"


def _options() -> list[str]:
  """Every decoder's options, in `DecoderSpec`'s field order."""
  used = {name for names in OPTIONS.values() for name in names}
  return [f.name for f in dataclasses.fields(DecoderSpec) if f.name in used]


def _unused(kind: str) -> list[str]:
  return [name for name in _options() if name not in OPTIONS[kind]]


def check(spec: DecoderSpec) -> list[str]:
  """Everything wrong with a spec, one message per problem, naming the config field."""
  p = []
  if spec.kind not in KINDS:
    return [_unknown_kind(spec.kind)]
  for name in ("vocab_size", "units", "feature_dim", "max_length"):
    if getattr(spec, name) < 1:
      p.append(f"{name} must be >= 1, not {getattr(spec, name)}")
  for name in _unused(spec.kind):
    if getattr(spec, name):
      p.append(f"model.{name} does not apply to decoder {spec.kind!r}")
  if spec.kind != "gru" and spec.num_heads < 1:
    p.append(f"model.num_heads must be >= 1 for decoder {spec.kind!r}, not {spec.num_heads}")
  elif spec.kind != "gru" and not spec.key_dim and spec.units % spec.num_heads:
    p.append(f"model.units ({spec.units}) must be a multiple of model.num_heads "
             f"({spec.num_heads}), or set model.key_dim")
  if spec.kind == "transformer":
    if spec.num_layers < 1:
      p.append(f"model.num_layers must be >= 1, not {spec.num_layers}")
    if not DROPOUT[1](spec.dropout):
      p.append(f"model.dropout = {spec.dropout!r}: must be {DROPOUT[0]}")
  if (spec.grid_position_embedding or spec.init_hidden_from_image
      or spec.kind == "transformer") and spec.positions < 1:
    p.append("positions (the image grid size) is needed by the grid-position embedding, "
             "init_hidden_from_image and the transformer")
  return p


def spec_from_config(model_config, *, vocab_size: int, feature_dim: int,
                     positions: int) -> DecoderSpec:
  """The spec of `config.model` for a vocabulary and an encoder's grid.

  A config holds the options of every decoder, so one file can train any of them
  (`--config.model.decoder=...`). Options of the other kinds (see `OPTIONS`) are not read,
  except those not in `CONFIG_MAY_HOLD`, which would otherwise be silently ignored and so
  are errors: `num_heads`, `key_dim` with "gru" (its attention is the seed's single head),
  `num_layers`, `mlp_dim` with the GRUs. 0 means the default for `num_heads` (4),
  `num_layers` (2), `key_dim` (units / heads) and `mlp_dim` (4 x units).
  """
  m = model_config
  kind = m.get("decoder", "gru")
  if kind not in KINDS:
    raise ValueError(_unknown_kind(kind))
  mixed = [name for name in _unused(kind) if name not in CONFIG_MAY_HOLD and m.get(name, 0)]
  if mixed:
    owners: dict[tuple[str, ...], list[str]] = {}  # kinds -> the refused options they read
    for name in _options():
      if name not in CONFIG_MAY_HOLD:
        owners.setdefault(tuple(k for k in KINDS if name in OPTIONS[k]), []).append(name)
    hint = "; ".join(f"{', '.join(names)}: {', '.join(kinds)}" for kinds, names in owners.items())
    raise ValueError(
        f"{', '.join('model.' + name for name in mixed)}: not used by decoder {kind!r}; set "
        f"to 0, or choose a decoder that has it ({hint})")

  def read(name):  # 0 or absent: the default; an option `kind` does not read stays 0
    return (m.get(name, 0) or _ZERO_MEANS.get(name, 0)) if name in OPTIONS[kind] else 0

  return DecoderSpec(
      kind=kind, vocab_size=vocab_size, units=m.units, feature_dim=feature_dim,
      positions=positions, max_length=m.max_length,
      grid_position_embedding=bool(read("grid_position_embedding")),
      init_hidden_from_image=bool(read("init_hidden_from_image")),
      num_heads=read("num_heads"), key_dim=read("key_dim"), num_layers=read("num_layers"),
      mlp_dim=read("mlp_dim"), dropout=float(read("dropout")))


def spec_from_meta(meta: dict) -> DecoderSpec:
  """The spec saved in a checkpoint's meta; workdirs from before decoder kinds hold "sizes"."""
  if "spec" in meta:
    return DecoderSpec.from_dict(meta["spec"])
  sizes = meta["sizes"]
  return DecoderSpec(
      kind="gru", vocab_size=sizes["vocab_size"], units=sizes["units"],
      feature_dim=sizes["feature_dim"], positions=sizes.get("positions", 0),
      max_length=meta["config"]["model"]["max_length"],
      grid_position_embedding=bool(sizes.get("position_embedding", False)),
      init_hidden_from_image=bool(sizes.get("init_hidden", False)))


def attention_description(spec: DecoderSpec) -> str:
  """What the attention maps that decoding returns show, for figures."""
  if spec.kind == "gru":
    return "attention over the grid"
  if spec.kind == "gru_mha":
    return f"attention averaged over the {spec.num_heads} heads"
  return (f"cross-attention of the last of {spec.num_layers} blocks, averaged over its "
          f"{spec.num_heads} heads")


def module(spec: DecoderSpec):
  from jaxcap.model.decoders import gru, transformer  # pylint: disable=g-import-not-at-top
  return transformer if spec.kind == "transformer" else gru


def init(key: jax.Array, spec: DecoderSpec) -> Params:
  return module(spec).init(key, spec)


def project(params: Params, outputs: jax.Array) -> jax.Array:
  """Decoder outputs (..., U) -> vocabulary logits (..., V): the one projection all share."""
  return layers.dense(params["logits"], outputs)


def project_loss_terms(params: Params, outputs: jax.Array, targets: jax.Array
                       ) -> tuple[jax.Array, jax.Array]:
  """(cross-entropy sum over the non-padding targets, their count) of `project`'s logits.

  outputs (..., U), targets (...) int (0 = padding). The projection and the loss are one
  function with a written-out gradient (`layers.dense_cross_entropy`): the train step's
  heaviest part.
  """
  units = outputs.shape[-1]
  return layers.dense_cross_entropy(params["logits"], outputs.reshape(-1, units),
                                    targets.reshape(-1))


def teacher_forced(params: Params, spec: DecoderSpec, features: jax.Array, tokens: jax.Array,
                   dropout_rng: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """A whole caption at once: features (B, P, D), tokens (B, T) -> outputs (B, T, U),
  attention (B, T, P). `dropout_rng` None = no dropout (evaluation)."""
  return module(spec).teacher_forced(params, spec, features, tokens, dropout_rng)


def teacher_forced_logits(params: Params, spec: DecoderSpec, features: jax.Array,
                          tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
  """`teacher_forced`, projected: logits (B, T, V) and attention (B, T, P)."""
  outputs, attention = teacher_forced(params, spec, features, tokens)
  return project(params, outputs), attention


def prepare(params: Params, spec: DecoderSpec, features: jax.Array) -> Any:
  """What a decoder computes once per image before decoding (the projected grid, ...)."""
  return module(spec).prepare(params, spec, features)


def initial_cache(params: Params, spec: DecoderSpec, context: Any, max_length: int) -> Any:
  """The decoding state before the first token: a pytree whose leaves are (B, ...)."""
  return module(spec).initial_cache(params, spec, context, max_length)


def step(params: Params, spec: DecoderSpec, context: Any, cache: Any, tokens: jax.Array,
         index: jax.Array) -> tuple[jax.Array, Any, jax.Array]:
  """One token per caption: tokens (B,) at position `index` -> logits (B, V), the new cache,
  attention (B, P) over the grid."""
  outputs, cache, attention = module(spec).step(params, spec, context, cache, tokens, index)
  return project(params, outputs), cache, attention


def repeat_batch(tree: Any, times: int) -> Any:
  """Every leaf (B, ...) -> (B * times, ...), each row repeated `times` times in place."""
  return jax.tree.map(lambda x: jnp.repeat(x, times, axis=0), tree)
