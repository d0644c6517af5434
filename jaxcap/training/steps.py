"""Loss, optimizer, and the data-parallel train/eval steps.

One step builder, `make_step`, serves every loss: it takes a loss function (params, batch,
rng) -> (loss sum, aux with "count") and returns the update, compiled with `jax.jit` and run
per device under `jax.shard_map` over a 1-D mesh (`parallel.data_mesh`): the state is
replicated on every device, each device takes its slice of the global batch, and the loss is
the masked mean over the *global* batch (counts are added across devices before dividing,
gradients after), so any device count gives the same update as one device on the same global
batch. The cross-entropy step (`make_train_step`) and the SCST step (scst.py) are two loss
functions for it. `init_train_state` and `TrainStep` are the pair to call from research code
with plain numpy arrays.

The cross-entropy loss projects only the positions that have a real target. The seed pads
captions to 64 tokens and projects every position onto the 20,000-word vocabulary, then
multiplies most of the cross-entropies by zero (COCO captions average about 12 words). Here
the host, which holds the tokens, lists each device's real target positions (`pack_batch`);
the device gathers those rows of the decoder's outputs into a packed (N, U) matrix and
projects, softmaxes and differentiates only there. N is rounded up to one of a few sizes
(`packed_size`: at most 1/8 padding rows) so the number of compiled programs stays small;
the padding rows point at a position whose target is padding and count for nothing. Same
loss and gradients as the padded computation (tests/test_training.py), less work.
"""

from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from jaxcap.model import decoders
from jaxcap.training import parallel
from jaxcap.training.parallel import AXIS
LR_SCHEDULES = ("constant", "cosine")
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}  # config name -> dtype


def shift_targets(tokens: jax.Array) -> jax.Array:
  """The seed's targets: inputs (B, T) shifted left by one, last position padding (0)."""
  return jnp.pad(tokens[:, 1:], ((0, 0), (0, 1)))


def loss_terms(params, spec: decoders.DecoderSpec, features, tokens,
               compute_dtype=jnp.float32, dropout_rng=None, positions=None,
               label_smoothing: float = 0.0):
  """Teacher-forced (loss sum, count) of captions `tokens` (B, T) given features (B, P, D).

  `dropout_rng` None = no dropout (evaluation). `positions` (N,) int: the flat indices into
  (B * T) of the positions to project (`pack_batch`), which must include every real
  target; None projects all B * T. Either way the result is the same. `label_smoothing`
  (a Python float, 0 = the seed's loss): see `layers.cross_entropy_terms`.
  """
  # Mixed precision: float32 master weights, `compute_dtype` matmuls, float32 loss.
  params = jax.tree.map(lambda p: p.astype(compute_dtype), params)
  outputs, _ = decoders.teacher_forced(params, spec, features.astype(compute_dtype), tokens,
                                       dropout_rng)
  targets = shift_targets(tokens)
  if positions is not None:  # (N, U) rows with a real target (and a few padding rows)
    outputs = jnp.take(outputs.reshape(-1, outputs.shape[-1]), positions, axis=0, mode="clip")
    targets = jnp.take(targets.reshape(-1), positions, mode="clip")
  return decoders.project_loss_terms(params, outputs, targets, label_smoothing)


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


def _matrices(params):
  """Weight decay's mask: kernels and embeddings (ndim >= 2), not biases or norm scales."""
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def keras_adam(learning_rate, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-7,
               weight_decay: float = 0.0):
  """optax Adam that updates exactly like `keras.optimizers.Adam`.

  `learning_rate` is a float or an optax schedule. `weight_decay` > 0: AdamW (optax.adamw:
  decoupled decay, scaled by the learning rate) on the kernels and embeddings only; its
  state has the same moments as Adam's.

  Keras adds `eps` to sqrt(v) *before* bias correction, optax after; that equals optax with
  eps_t = eps / sqrt(1 - b2**t) at step t, which inject_hyperparams feeds it each step.
  """

  def eps_schedule(count):
    t = count + 1
    return eps / jnp.sqrt(1.0 - b2 ** t)

  if weight_decay:
    return optax.inject_hyperparams(optax.adamw, static_args=("mask",))(
        learning_rate=learning_rate, b1=b1, b2=b2, eps=eps_schedule,
        weight_decay=weight_decay, mask=_matrices)
  return optax.inject_hyperparams(optax.adam)(
      learning_rate=learning_rate, b1=b1, b2=b2, eps=eps_schedule
  )


def make_optimizer(config):
  """Keras-exact Adam (AdamW with `train.weight_decay`) with the config's learning-rate
  schedule."""
  return keras_adam(
      learning_rate_schedule(config.train.learning_rate, config.train.lr_schedule,
                             config.train.num_steps),
      config.train.b1, config.train.b2, config.train.eps,
      config.train.get("weight_decay", 0.0))


@flax.struct.dataclass
class Ema:
  """An exponential moving average of the parameters (`train.ema_decay`)."""
  params: Any
  decay: float = flax.struct.field(pytree_node=False, default=0.999)

  def update(self, params, step: jax.Array) -> "Ema":
    """The average after the update to `step` (1 = the first): ema = d ema + (1 - d) params
    with d = min(decay, (1 + step) / (10 + step)), TensorFlow's warm-up for num_updates, so
    the first steps' average is not held near the initial parameters."""
    step = jnp.asarray(step, jnp.float32)
    d = jnp.minimum(self.decay, (1.0 + step) / (10.0 + step))
    return self.replace(params=jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, self.params,
                                            params))


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # () int32
  params: Any
  opt_state: Any
  ema: Ema | None = None  # None: no average kept

  @property
  def eval_params(self):
    """The parameters to validate and caption with: the average when one is kept."""
    return self.params if self.ema is None else self.ema.params


def init_state(params, optimizer, ema_decay: float = 0.0) -> TrainState:
  """Step 0; `ema_decay` > 0 keeps an `Ema` of the parameters, starting from them."""
  ema = Ema(jax.tree.map(jnp.copy, params), float(ema_decay)) if ema_decay else None
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=optimizer.init(params), ema=ema)



def init_train_state(params, optimizer, mesh: Mesh | None = None,
                     ema_decay: float = 0.0) -> TrainState:
  """The train state of `params` (a pytree of float32 arrays, e.g. `decoders.init`): step 0,
  `optimizer.init(params)` (and an `Ema` with `ema_decay` > 0), replicated on every device of
  `mesh` (default: all devices). What `TrainStep`, `make_train_step` and `make_step` take."""
  return parallel.put_replicated(init_state(params, optimizer, ema_decay),
                                 mesh or parallel.data_mesh())


LossFn = Callable[[Any, Any, jax.Array], tuple[jax.Array, dict]]
"""(params, batch, rng) -> (loss sum, aux), on one device's slice of the batch.

aux["count"]: how many terms the sum holds (a constant of the batch: no gradient flows through
it); the step's loss is the global sum over the global count. `rng` is a function of (seed,
step, device).
"""


def make_step(loss_fn: LossFn, optimizer, mesh: Mesh, *, seed: int = 0):
  """The train step for any loss: (state, batch) -> (new state, metrics), compiled.

  state: a `TrainState` replicated on `mesh` (`init_train_state`), donated. batch: a pytree
  of global arrays split on their leading axis over the mesh (`parallel.global_batch`).
  metrics: {"loss": the global mean, and each aux value summed over the devices}, replicated
  scalars. Per-device code under `jax.shard_map`: the device's loss sum is divided by the
  global count, and the gradients are summed across the devices before the update.
  """
  one_device = mesh.size == 1

  def total(tree):  # psum; skipped on one device, where it would only copy every gradient
    return tree if one_device else jax.lax.psum(tree, AXIS)

  def per_device(state: TrainState, batch):
    # Dropout masks are a function of (seed, step, device): a resumed run draws the same ones.
    rng = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), state.step),
                             jax.lax.axis_index(AXIS))

    def local_loss(params):
      loss_sum, aux = loss_fn(params, batch, rng)
      count = jnp.maximum(total(jax.lax.stop_gradient(aux["count"])), 1.0)
      return loss_sum / count, aux  # this device's share of the global mean

    (local, aux), grads = jax.value_and_grad(local_loss, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(total(grads), state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = TrainState(step=state.step + 1, params=params, opt_state=opt_state,
                           ema=None if state.ema is None else state.ema.update(params,
                                                                               state.step + 1))
    return new_state, total(dict(aux, loss=local))

  # check_vma=False: the sums across devices are the explicit psums above, as in the maths.
  return jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(AXIS)),
                               out_specs=(P(), P()), check_vma=False),
                 donate_argnums=(0,))


def cross_entropy(spec: decoders.DecoderSpec, compute_dtype=jnp.float32,
                  label_smoothing: float = 0.0) -> LossFn:
  """The seed's teacher-forced loss as a `LossFn` of a batch {"features": (b, P, D),
  "tokens": (b, T), optionally "positions": (N,) (`pack_batch`)}; dropout when the spec has
  it, label smoothing when asked."""

  def loss_fn(params, batch, rng):
    total, count = loss_terms(params, spec, batch["features"], batch["tokens"], compute_dtype,
                              rng if spec.has_dropout else None, batch.get("positions"),
                              label_smoothing)
    return total, {"count": count}

  return loss_fn


class PackedStep:
  """A compiled function of (first, batch), called with this process's rows as host arrays:
  `step(first, features (b, P, D), tokens (b, T))`, b a multiple of this process's device
  count. The host trims the tokens and lists each device's real target positions
  (`pack_batch`), then puts the rows on the mesh (`parallel.global_batch`).

  Programs compiled: one per (trimmed length, N): lengths are multiples of 8 (at most 8 for
  captions of 64), N takes 8 sizes per doubling; a stream of COCO-like batches of 32 uses
  a few lengths (16-32) times 3-4 sizes of N.
  """

  def __init__(self, compiled, mesh: Mesh):
    self.compiled, self.mesh = compiled, mesh

  def batch(self, features, tokens, *, pack: bool = True) -> dict:
    """The global batch of this process's rows; `pack=False` projects every position."""
    n = parallel.local_devices(self.mesh)
    tokens = np.asarray(tokens)
    parallel.check_rows(len(tokens), n)
    batch = {"features": features, "tokens": tokens}
    if pack:
      trimmed, positions = pack_batch(tokens.reshape((n, -1) + tokens.shape[1:]))
      batch["tokens"] = trimmed.reshape(len(tokens), -1)
      if positions is not None:
        batch["positions"] = positions.reshape(-1)
    return parallel.global_batch(batch, self.mesh)

  def __call__(self, first, features, tokens, *, pack: bool = True):
    return self.compiled(first, self.batch(features, tokens, pack=pack))

  def lower(self, first, features, tokens):
    """The compiled program for this batch (`.compile().as_text()`, cost analysis)."""
    return self.compiled.lower(first, self.batch(features, tokens))


def make_train_step(optimizer, spec: decoders.DecoderSpec, compute_dtype=jnp.float32,
                    dropout_seed: int = 0, mesh: Mesh | None = None,
                    label_smoothing: float = 0.0) -> PackedStep:
  """The cross-entropy step: (replicated state, features (b, P, D), tokens (b, T) on the
  host) -> (new state, {"loss", "count"}: global, replicated, not waited for). The loss is
  label-smoothed when asked (validation loss, `make_eval_step`, never is)."""
  mesh = mesh or parallel.data_mesh()
  return PackedStep(make_step(cross_entropy(spec, compute_dtype, label_smoothing), optimizer,
                              mesh, seed=dropout_seed), mesh)


def make_eval_step(spec: decoders.DecoderSpec, compute_dtype=jnp.float32,
                   mesh: Mesh | None = None) -> PackedStep:
  """(replicated params, features, tokens on the host) -> global (loss sum, count); use
  `loss = sum / count`."""
  mesh = mesh or parallel.data_mesh()
  loss_fn = cross_entropy(spec, compute_dtype)

  def per_device(params, batch):
    total, aux = loss_fn(params, batch, None)
    return jax.lax.psum((total, aux["count"]), AXIS)

  return PackedStep(jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(AXIS)),
                                          out_specs=P(), check_vma=False)), mesh)


class TrainStep:
  """Cross-entropy training from plain host arrays; the sharding is handled inside.

      state = training.init_train_state(decoders.init(jax.random.key(0), spec), optimizer)
      step = training.TrainStep(optimizer, spec)
      state, metrics = step(state, features, tokens)  # {"loss": float, "count": float}

  features (B, P, D) float and tokens (B, T) int (0 = padding, each caption starting with
  `<start>`) are this process's rows of the global batch (all of it on one host), B a
  multiple of its device count. The state passed in is donated: keep the one returned.
  Each call waits for its step; `make_train_step` is the asynchronous form `train.py` runs.
  """

  def __init__(self, optimizer, spec: decoders.DecoderSpec, compute_dtype=jnp.float32,
               dropout_seed: int = 0, mesh: Mesh | None = None):
    self.step = make_train_step(optimizer, spec, compute_dtype, dropout_seed, mesh)

  def __call__(self, state: TrainState, features: np.ndarray, tokens: np.ndarray
               ) -> tuple[TrainState, dict[str, float]]:
    state, metrics = self.step(state, features, tokens)
    return state, {k: float(v) for k, v in metrics.items()}
