"""The decoder family behind one interface, and the description (`DecoderSpec`) that picks one.

    "gru"          the seed: GRU -> dot attention over the grid -> add -> LayerNorm (gru.py)
    "gru_mha"      the seed's suggested next step: the same GRU core with Keras's
                   MultiHeadAttention in place of its single-head dot attention (gru_mha.py)
    "transformer"  (transformer.py) pre-LayerNorm blocks of causal self-attention,
                   cross-attention over the grid and an MLP, with a key/value cache

Each is a module with the members `base.Decoder` names (its options and checks, `init`,
`teacher_forced`, `prepare`, `initial_cache`, `step`, `attention_description`); `REGISTRY`
below is the one list of them. Everything else (training, greedy, sampling and beam search,
SCST) reaches a decoder only through the dispatchers here, which look its module up by
`spec.kind`:

    init(key, spec) -> params
    teacher_forced(params, spec, features (B, P, D), tokens (B, T), dropout_rng)
        -> outputs (B, T, U), attention (B, T, P)
    prepare(params, spec, features (B, P, D)) -> context    per image, computed once
    initial_cache(params, spec, context, max_length) -> cache   a pytree, leaves (B, ...)
    step(params, spec, context, cache, tokens (B,), index ()) -> logits (B, V), cache,
                                                                attention (B, P)

`outputs` stop before the vocabulary projection, which all decoders share (`project`): the
training loss projects only the positions that have a real target.

Adding a decoder: a module with `base.Decoder`'s members, one line in `REGISTRY`, its tests.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from jaxcap.model import layers
from jaxcap.model.decoders import gru, gru_mha, transformer
from jaxcap.model.decoders.base import (  # noqa: F401  (the package's API)
    COMMON_OPTIONS, CONFIG_MAY_HOLD, DEFAULT_NUM_HEADS, DEFAULT_NUM_LAYERS, DROPOUT,
    DROPOUT_OPTIONS, Decoder, OPTION_RANGES, Params)

# kind (`DecoderSpec.kind`, `config.model.decoder`) -> its module: the one list of decoders.
REGISTRY: dict[str, Decoder] = {
    "gru": gru,
    "gru_mha": gru_mha,
    "transformer": transformer,
}


def __getattr__(name: str):
  # KINDS follows REGISTRY (a test may register a decoder of its own).
  if name == "KINDS":
    return tuple(REGISTRY)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclasses.dataclass(frozen=True)
class DecoderSpec:
  """What a decoder is: its kind and sizes. Saved in every checkpoint (`to_dict`).

  vocab_size (V), units (U: the model width), feature_dim (D: the encoder's), positions
  (P: the image grid size), max_length (L: tokens per caption, the Transformer's position
  table and cache size). The options, each read by the kinds whose module lists it in its
  `OPTIONS` and zero in the others: GRU-only grid_position_embedding, init_hidden_from_image;
  attention (gru_mha, transformer) num_heads, key_dim (per head; 0 = U / heads);
  transformer-only num_layers, mlp_dim (0 = 4 U), dropout; GRU-only embedding_dropout,
  gru_output_dropout; every kind's output_dropout, tie_embedding (`COMMON_OPTIONS`). A
  meta saved before an option existed loads with it off (0).
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
  embedding_dropout: float = 0.0
  gru_output_dropout: float = 0.0
  output_dropout: float = 0.0
  tie_embedding: bool = False

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

  @property
  def has_dropout(self) -> bool:
    """Whether training draws dropout masks (a train step needs a key)."""
    return any(getattr(self, name) for name in DROPOUT_OPTIONS)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict) -> "DecoderSpec":
    return cls(**d)


def _unknown_kind(kind: str) -> str:
  return f"model.decoder must be one of {', '.join(REGISTRY)}, not {kind!r}"


def get(spec: DecoderSpec) -> Decoder:
  """The module of `spec.kind`."""
  return REGISTRY[spec.kind]


def _options() -> list[str]:
  """Every registered decoder's options, in `DecoderSpec`'s field order."""
  used = {name for decoder in REGISTRY.values() for name in decoder.OPTIONS} | set(
      COMMON_OPTIONS)
  return [f.name for f in dataclasses.fields(DecoderSpec) if f.name in used]


def _unused(kind: str) -> list[str]:
  return [name for name in OPTION_RANGES
          if name not in REGISTRY[kind].OPTIONS and name not in COMMON_OPTIONS]


def check(spec: DecoderSpec) -> list[str]:
  """Everything wrong with a spec, one message per problem, naming the config field: the
  sizes and options every decoder shares the rules of here, the rest by its module."""
  if spec.kind not in REGISTRY:
    return [_unknown_kind(spec.kind)]
  p = []
  for name in ("vocab_size", "units", "feature_dim", "max_length"):
    if getattr(spec, name) < 1:
      p.append(f"{name} must be >= 1, not {getattr(spec, name)}")
  for name in _unused(spec.kind):
    if getattr(spec, name):
      p.append(f"model.{name} does not apply to decoder {spec.kind!r}")
  for name in DROPOUT_OPTIONS[1:]:  # the transformer checks its own `dropout`
    if not DROPOUT[1](getattr(spec, name)):
      p.append(f"model.{name} = {getattr(spec, name)!r}: must be {DROPOUT[0]}")
  return p + get(spec).check(spec)


def spec_from_config(model_config, *, vocab_size: int, feature_dim: int,
                     positions: int) -> DecoderSpec:
  """The spec of `config.model` for a vocabulary and an encoder's grid.

  A config holds the options of every decoder, so one file can train any of them
  (`--config.model.decoder=...`). Options the kind's module does not list in its `OPTIONS`
  are not read, except those not in `CONFIG_MAY_HOLD`, which would otherwise be silently
  ignored and so are errors: `num_heads`, `key_dim` with "gru" (its attention is the seed's
  single head), `num_layers`, `mlp_dim` with the GRUs. 0 (or absent) means the module's
  default (`OPTIONS`): 4 for `num_heads`, 2 for `num_layers`; 0 for `key_dim` (units /
  heads) and `mlp_dim` (4 x units).
  """
  m = model_config
  kind = m.get("decoder", "gru")
  if kind not in REGISTRY:
    raise ValueError(_unknown_kind(kind))
  mixed = [name for name in _unused(kind) if name not in CONFIG_MAY_HOLD and m.get(name, 0)]
  if mixed:
    owners: dict[tuple[str, ...], list[str]] = {}  # kinds -> the refused options they read
    for name in _options():
      if name not in CONFIG_MAY_HOLD:
        readers = tuple(k for k, decoder in REGISTRY.items() if name in decoder.OPTIONS)
        owners.setdefault(readers, []).append(name)
    hint = "; ".join(f"{', '.join(names)}: {', '.join(kinds)}" for kinds, names in owners.items())
    raise ValueError(
        f"{', '.join('model.' + name for name in mixed)}: not used by decoder {kind!r}; set "
        f"to 0, or choose a decoder that has it ({hint})")

  defaults = {**COMMON_OPTIONS, **REGISTRY[kind].OPTIONS}
  # 0 or absent: the default; an option `kind` does not read stays 0. Each is cast to its
  # field's type (the type of its zero default: bool, int, float).
  options = {f.name: type(f.default)(m.get(f.name, 0) or defaults[f.name])
             for f in dataclasses.fields(DecoderSpec) if f.name in defaults}
  return DecoderSpec(kind=kind, vocab_size=vocab_size, units=m.units, feature_dim=feature_dim,
                     positions=positions, max_length=m.max_length, **options)


def spec_from_meta(meta: dict) -> DecoderSpec:
  """The spec saved in a checkpoint's meta (workdirs from before decoder kinds:
  `compat.decoder_spec_from_sizes`)."""
  if "spec" in meta:
    return DecoderSpec.from_dict(meta["spec"])
  from jaxcap import compat  # pylint: disable=g-import-not-at-top  (the shims: above the rooms)
  return compat.decoder_spec_from_sizes(meta)


def attention_description(spec: DecoderSpec) -> str:
  """What the attention maps that decoding returns show, for figures."""
  return get(spec).attention_description(spec)


def init(key: jax.Array, spec: DecoderSpec) -> Params:
  """Fresh parameters; with `tie_embedding`, params['logits'] holds only its bias."""
  params = get(spec).init(key, spec)
  if spec.tie_embedding:
    embedding = params.get("embedding")
    if getattr(embedding, "shape", None) != (spec.vocab_size, spec.units):
      raise ValueError(f"model.tie_embedding needs an embedding of shape (vocab_size, "
                       f"units); decoder {spec.kind!r} has none")
    params["logits"] = {"bias": params["logits"]["bias"]}
  return params


def projection(params: Params) -> Params:
  """The vocabulary projection {'kernel': (U, V), 'bias': (V,)}: params['logits'], or
  with a tied embedding (no 'kernel' there) the embedding (V, U) transposed."""
  logits = params["logits"]
  if "kernel" in logits:
    return logits
  return {"kernel": params["embedding"].T, "bias": logits["bias"]}


def project(params: Params, outputs: jax.Array) -> jax.Array:
  """Decoder outputs (..., U) -> vocabulary logits (..., V): the one projection all share."""
  return layers.dense(projection(params), outputs)


def project_loss_terms(params: Params, outputs: jax.Array, targets: jax.Array,
                       label_smoothing: float = 0.0) -> tuple[jax.Array, jax.Array]:
  """(cross-entropy sum over the non-padding targets, their count) of `project`'s logits.

  outputs (..., U), targets (...) int (0 = padding), label_smoothing a Python float (0 =
  the seed's loss). The projection and the loss are one function with a written-out
  gradient (`layers.dense_cross_entropy`): the train step's heaviest part.
  """
  units = outputs.shape[-1]
  return layers.dense_cross_entropy(projection(params), outputs.reshape(-1, units),
                                    targets.reshape(-1), label_smoothing)


OUTPUT_DROPOUT_SITE = 0x0D0C  # `layers.dropout` site, apart from every decoder's own


def teacher_forced(params: Params, spec: DecoderSpec, features: jax.Array, tokens: jax.Array,
                   dropout_rng: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """A whole caption at once: features (B, P, D), tokens (B, T) -> outputs (B, T, U),
  attention (B, T, P). `dropout_rng` None = no dropout (evaluation); otherwise
  `output_dropout` applies to the outputs."""
  outputs, attention = get(spec).teacher_forced(params, spec, features, tokens, dropout_rng)
  return (layers.dropout(outputs, spec.output_dropout, dropout_rng, OUTPUT_DROPOUT_SITE),
          attention)


def teacher_forced_logits(params: Params, spec: DecoderSpec, features: jax.Array,
                          tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
  """`teacher_forced`, projected: logits (B, T, V) and attention (B, T, P)."""
  outputs, attention = teacher_forced(params, spec, features, tokens)
  return project(params, outputs), attention


def prepare(params: Params, spec: DecoderSpec, features: jax.Array) -> Any:
  """What a decoder computes once per image before decoding (the projected grid, ...)."""
  return get(spec).prepare(params, spec, features)


def initial_cache(params: Params, spec: DecoderSpec, context: Any, max_length: int) -> Any:
  """The decoding state before the first token: a pytree whose leaves are (B, ...)."""
  return get(spec).initial_cache(params, spec, context, max_length)


def step(params: Params, spec: DecoderSpec, context: Any, cache: Any, tokens: jax.Array,
         index: jax.Array) -> tuple[jax.Array, Any, jax.Array]:
  """One token per caption: tokens (B,) at position `index` -> logits (B, V), the new cache,
  attention (B, P) over the grid."""
  outputs, cache, attention = get(spec).step(params, spec, context, cache, tokens, index)
  return project(params, outputs), cache, attention


def cast_params(params: Params, dtype) -> Params:
  """Every floating-point leaf of `params` as `dtype` (e.g. jnp.bfloat16), cast once at load.

  The layers cast weights to the activations' dtype where they use them, and softmax, the
  attention weights and the loop's log-probabilities stay float32.
  """
  return jax.tree.map(
      lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, params)


def repeat_batch(tree: Any, times: int) -> Any:
  """Every leaf (B, ...) -> (B * times, ...), each row repeated `times` times in place."""
  return jax.tree.map(lambda x: jnp.repeat(x, times, axis=0), tree)
