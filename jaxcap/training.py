"""Loss, optimizer and the data-parallel train/eval steps.

The train step is `jax.pmap`-ped over the local devices: each device takes its slice of the
global batch, and the loss is the seed's masked mean over the *global* batch (sums and
counts are added across devices before dividing), so any device count gives the same
update as one device on the same global batch.
"""

from __future__ import annotations

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcap import decoders

AXIS = "devices"
LR_SCHEDULES = ("constant", "cosine")
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}  # config name -> dtype


def shift_targets(tokens: jax.Array) -> jax.Array:
  """The seed's targets: inputs (B, T) shifted left by one, last position padding (0)."""
  return jnp.pad(tokens[:, 1:], ((0, 0), (0, 1)))


def masked_loss_terms(logits: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Summed cross-entropy over non-padding targets, and how many there are.

  Args:
    logits: (B, T, V).
    targets: (B, T) int, 0 = padding.

  Returns:
    (loss sum, count) scalars: the seed's loss is their ratio.
  """
  losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
  mask = (targets != 0).astype(jnp.float32)
  return jnp.sum(losses * mask), jnp.sum(mask)


def loss_terms(params, spec: decoders.DecoderSpec, features, tokens,
               compute_dtype=jnp.float32, dropout_rng=None):
  """Teacher-forced (loss sum, count) of captions `tokens` (B, T) given features (B, P, D).

  `dropout_rng` None = no dropout (evaluation).
  """
  # Mixed precision: float32 master weights, `compute_dtype` matmuls, float32 loss.
  params = jax.tree.map(lambda p: p.astype(compute_dtype), params)
  outputs, _ = decoders.teacher_forced(params, spec, features.astype(compute_dtype), tokens,
                                       dropout_rng)
  return masked_loss_terms(decoders.project(params, outputs), shift_targets(tokens))


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


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # () int32
  params: Any
  opt_state: Any


def init_state(params, optimizer) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=optimizer.init(params))


def _train_step(state: TrainState, features, tokens, *, optimizer, spec, compute_dtype,
                dropout_seed):
  """Runs per device on its slice: features (b, P, D), tokens (b, T)."""
  count = jax.lax.psum(jnp.sum((shift_targets(tokens) != 0).astype(jnp.float32)), AXIS)
  count = jnp.maximum(count, 1.0)
  # Dropout masks are a function of (seed, step, device): a resumed run draws the same ones.
  dropout_rng = None
  if spec.dropout:
    dropout_rng = jax.random.fold_in(
        jax.random.fold_in(jax.random.key(dropout_seed), state.step),
        jax.lax.axis_index(AXIS))

  def local_loss(params):
    total, _ = loss_terms(params, spec, features, tokens, compute_dtype, dropout_rng)
    return total / count  # this device's share of the global masked mean

  local, grads = jax.value_and_grad(local_loss)(state.params)
  grads = jax.lax.psum(grads, AXIS)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  new_state = TrainState(
      step=state.step + 1, params=optax.apply_updates(state.params, updates), opt_state=opt_state
  )
  return new_state, jax.lax.psum(local, AXIS)


def _eval_step(params, features, tokens, *, spec, compute_dtype):
  total, count = loss_terms(params, spec, features, tokens, compute_dtype)
  return jax.lax.psum(total, AXIS), jax.lax.psum(count, AXIS)


def make_train_step(optimizer, spec: decoders.DecoderSpec, compute_dtype=jnp.float32,
                    dropout_seed: int = 0):
  """pmap-ped step: (replicated state, sharded features (n, b, P, D), tokens (n, b, T))
  -> (new replicated state, replicated global loss (n,))."""
  return jax.pmap(
      functools.partial(_train_step, optimizer=optimizer, spec=spec,
                        compute_dtype=compute_dtype, dropout_seed=dropout_seed),
      axis_name=AXIS, donate_argnums=(0,),
  )


def make_eval_step(spec: decoders.DecoderSpec, compute_dtype=jnp.float32):
  """pmap-ped (loss sum, count) over a sharded batch; use `loss = sum / count`."""
  return jax.pmap(
      functools.partial(_eval_step, spec=spec, compute_dtype=compute_dtype), axis_name=AXIS
  )


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
