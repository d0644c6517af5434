"""Loss, optimizer and the data-parallel train/eval steps.

The train step is `jax.pmap`-ped over the local devices: each device takes its slice of the
global batch, and the loss is the seed's masked mean over the *global* batch (sums and
counts are added across devices before dividing), so any device count gives the same
update as one device on the same global batch.

The loss projects only the positions that have a real target. The seed pads captions to 64
tokens and projects every position onto the 20,000-word vocabulary, then multiplies most of
the cross-entropies by zero (COCO captions average about 12 words). Here the host, which
holds the tokens, lists each device's real target positions (`pack_batch`); the device
gathers those rows of the decoder's outputs into a packed (N, U) matrix and projects,
softmaxes and differentiates only there. N is rounded up to one of a few sizes
(`packed_size`: at most 1/8 padding rows) so the number of compiled programs stays small;
the padding rows point at a position whose target is padding and count for nothing. Same
loss and gradients as the padded computation (tests/test_training.py), less work.
"""

from __future__ import annotations

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcap.model import decoders

AXIS = "devices"
LR_SCHEDULES = ("constant", "cosine")
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}  # config name -> dtype


def shift_targets(tokens: jax.Array) -> jax.Array:
  """The seed's targets: inputs (B, T) shifted left by one, last position padding (0)."""
  return jnp.pad(tokens[:, 1:], ((0, 0), (0, 1)))


def loss_terms(params, spec: decoders.DecoderSpec, features, tokens,
               compute_dtype=jnp.float32, dropout_rng=None, positions=None):
  """Teacher-forced (loss sum, count) of captions `tokens` (B, T) given features (B, P, D).

  `dropout_rng` None = no dropout (evaluation). `positions` (N,) int: the flat indices into
  (B * T) of the positions to project (`pack_batch`), which must include every real
  target; None projects all B * T. Either way the result is the same.
  """
  # Mixed precision: float32 master weights, `compute_dtype` matmuls, float32 loss.
  params = jax.tree.map(lambda p: p.astype(compute_dtype), params)
  outputs, _ = decoders.teacher_forced(params, spec, features.astype(compute_dtype), tokens,
                                       dropout_rng)
  targets = shift_targets(tokens)
  if positions is not None:  # (N, U) rows with a real target (and a few padding rows)
    outputs = jnp.take(outputs.reshape(-1, outputs.shape[-1]), positions, axis=0, mode="clip")
    targets = jnp.take(targets.reshape(-1), positions, mode="clip")
  return decoders.project_loss_terms(params, outputs, targets)


def packed_size(count: int, limit: int) -> int:
  """Rows of the packed loss matrix for `count` real targets: the next multiple of
  max(8, 2**(bits(count) - 4)), i.e. at most 1/8 padding rows and 8 sizes per doubling,
  capped at `limit` (all positions). COCO-like batches of 32 land on 2-3 sizes."""
  count = max(count, 1)
  granule = max(8, 1 << max(count.bit_length() - 4, 0))
  return min(-(-count // granule) * granule, limit)


LENGTH_MULTIPLE = 8  # the step trims trailing all-padding columns to a multiple of this


def pack_batch(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
  """Host side: the work a batch of captions (n devices, b, T) really needs.

  Returns:
    tokens (n, b, T'): the columns after the last real token dropped, T' rounded up to a
      multiple of `LENGTH_MULTIPLE` (outputs depend only on earlier tokens, so the loss is
      unchanged; the seed pads every caption to 64 where COCO's longest in a batch of 32 is
      about 20);
    positions (n, N) int32: per device, the flat positions (into b * T') of the real
      targets, N = `packed_size` of the largest per-device count, each row padded with
      position T' - 1 of its first caption, whose target is always padding; None when N
      would cover every position anyway (nothing to skip: no gather).
  Both sizes are agreed across processes, which must run the same program.
  """
  tokens = np.asarray(tokens)
  n, b, length = tokens.shape
  used = np.flatnonzero((tokens != 0).any(axis=(0, 1)))
  keep = -(-(int(used[-1]) + 1 if used.size else 1) // LENGTH_MULTIPLE) * LENGTH_MULTIPLE
  real = np.zeros((n, b, length), bool)  # shift_targets(tokens) != 0, on the host
  real[..., :-1] = tokens[..., 1:] != 0
  most = int(real.reshape(n, -1).sum(axis=1).max())
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    keep, most = (int(v) for v in np.max(
        multihost_utils.process_allgather(np.array([keep, most], np.int32)), axis=0))
  length = min(keep, length)
  tokens, real = tokens[..., :length], real[..., :length].reshape(n, b * length)
  size = packed_size(most, b * length)
  if size >= b * length:
    return tokens, None
  positions = np.full((n, size), length - 1, np.int32)
  for d in range(n):
    where = np.flatnonzero(real[d])
    positions[d, :len(where)] = where
  return tokens, positions


def _sum_devices(tree):
  """psum over the devices; skipped on one device, where it would only copy every gradient."""
  return tree if jax.lax.axis_size(AXIS) == 1 else jax.lax.psum(tree, AXIS)


def loss(params, spec: decoders.DecoderSpec, features, tokens,
         compute_dtype=jnp.float32) -> jax.Array:
  """The seed's loss: masked cross-entropy summed and divided by the non-padding count."""
  total, count = loss_terms(params, spec, features, tokens, compute_dtype)
  return total / jnp.maximum(count, 1.0)


def learning_rate_schedule(learning_rate: float, kind: str, num_steps: int):
  """"constant" (the seed) or "cosine" (decays to 0 over `num_steps`)."""
  if kind == "constant":
    return learning_rate
  if kind == "cosine":
    return optax.cosine_decay_schedule(learning_rate, max(num_steps, 1))
  raise ValueError(f"unknown learning-rate schedule {kind!r}: use one of {LR_SCHEDULES}")


def keras_adam(learning_rate, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-7):
  """optax Adam that updates exactly like `keras.optimizers.Adam`.

  `learning_rate` is a float or an optax schedule.

  Keras adds `eps` to sqrt(v) *before* bias correction, optax after; that equals optax with
  eps_t = eps / sqrt(1 - b2**t) at step t, which inject_hyperparams feeds it each step.
  """

  def eps_schedule(count):
    t = count + 1
    return eps / jnp.sqrt(1.0 - b2 ** t)

  return optax.inject_hyperparams(optax.adam)(
      learning_rate=learning_rate, b1=b1, b2=b2, eps=eps_schedule
  )


def make_optimizer(config):
  """Keras-exact Adam with the config's learning-rate schedule."""
  return keras_adam(
      learning_rate_schedule(config.train.learning_rate, config.train.lr_schedule,
                             config.train.num_steps),
      config.train.b1, config.train.b2, config.train.eps)


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # () int32
  params: Any
  opt_state: Any


def init_state(params, optimizer) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=optimizer.init(params))


def _train_step(state: TrainState, features, tokens, positions, *, optimizer, spec,
                compute_dtype, dropout_seed):
  """Runs per device on its slice: features (b, P, D), tokens (b, T), positions (N,) or
  None (see `loss_terms`)."""
  count = _sum_devices(jnp.sum((shift_targets(tokens) != 0).astype(jnp.float32)))
  count = jnp.maximum(count, 1.0)
  # Dropout masks are a function of (seed, step, device): a resumed run draws the same ones.
  dropout_rng = None
  if spec.dropout:
    dropout_rng = jax.random.fold_in(
        jax.random.fold_in(jax.random.key(dropout_seed), state.step),
        jax.lax.axis_index(AXIS))

  def local_loss(params):
    total, _ = loss_terms(params, spec, features, tokens, compute_dtype, dropout_rng, positions)
    return total / count  # this device's share of the global masked mean

  local, grads = jax.value_and_grad(local_loss)(state.params)
  grads = _sum_devices(grads)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  new_state = TrainState(
      step=state.step + 1, params=optax.apply_updates(state.params, updates), opt_state=opt_state
  )
  return new_state, _sum_devices(local)


def _eval_step(params, features, tokens, positions, *, spec, compute_dtype):
  total, count = loss_terms(params, spec, features, tokens, compute_dtype, None, positions)
  return _sum_devices((total, count))


class PackedStep:
  """A pmap-ped function of (first, features, tokens, positions), called as
  `step(first, features (n, b, P, D), tokens (n, b, T))`: the host trims the tokens and
  lists their real target positions (`pack_batch`).

  Programs compiled: one per (trimmed length, N): lengths are multiples of 8 (at most 8 for
  captions of 64), N takes 8 sizes per doubling; a stream of COCO-like batches of 32 uses
  a few lengths (16-32) times 3-4 sizes of N.
  """

  def __init__(self, pmapped):
    self.pmapped = pmapped

  def _args(self, first, features, tokens):
    return (first, features) + pack_batch(tokens)

  def __call__(self, first, features, tokens):
    return self.pmapped(*self._args(first, features, tokens))

  def lower(self, first, features, tokens):
    """The compiled program for this batch (`.compile().as_text()`, cost analysis)."""
    return self.pmapped.lower(*self._args(first, features, tokens))


def make_train_step(optimizer, spec: decoders.DecoderSpec, compute_dtype=jnp.float32,
                    dropout_seed: int = 0) -> PackedStep:
  """The step: (replicated state, sharded features (n, b, P, D), tokens (n, b, T) on the
  host) -> (new replicated state, replicated global loss (n,))."""
  return PackedStep(jax.pmap(
      functools.partial(_train_step, optimizer=optimizer, spec=spec,
                        compute_dtype=compute_dtype, dropout_seed=dropout_seed),
      axis_name=AXIS, donate_argnums=(0,),
  ))


def make_eval_step(spec: decoders.DecoderSpec, compute_dtype=jnp.float32) -> PackedStep:
  """(replicated params, sharded features, tokens) -> replicated (loss sum, count); use
  `loss = sum / count`."""
  return PackedStep(jax.pmap(
      functools.partial(_eval_step, spec=spec, compute_dtype=compute_dtype), axis_name=AXIS
  ))


def shard(batch: np.ndarray, num_devices: int | None = None) -> np.ndarray:
  """(B, ...) -> (devices, B // devices, ...); B must divide evenly."""
  n = num_devices or jax.local_device_count()
  if batch.shape[0] % n:
    raise ValueError(
        f"the batch size ({batch.shape[0]}) must be a multiple of the device count ({n})"
    )
  return batch.reshape((n, batch.shape[0] // n) + batch.shape[1:])


def replicate(tree, devices=None):
  """A copy of `tree` on each of `devices` (default: all local devices), stacked on axis 0."""
  return flax.jax_utils.replicate(tree, devices)


def unreplicate(tree):
  return flax.jax_utils.unreplicate(tree)
