"""The decoder's hand-written math, as pure functions that copy Keras's defaults.

Each works on any leading batch shape, so the teacher-forced pass (B, T, ...) and the
one-step decoder (B, 1, ...) call the very same code.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

# A parameter pytree: nested dicts of arrays (one name for every module's signatures).
Params = dict

# keras.layers.LayerNormalization's default (Flax's is 1e-6).
KERAS_LAYER_NORM_EPSILON = 1e-3


def dense(params: dict, x: jax.Array) -> jax.Array:
  """x (..., D_in) -> (..., D_out) with params {'kernel': (D_in, D_out), 'bias': (D_out,)}."""
  return x @ params["kernel"].astype(x.dtype) + params["bias"].astype(x.dtype)


def dropout(x: jax.Array, rate: float, rng: jax.Array | None, site: int) -> jax.Array:
  """Inverted dropout of x at `rate` with the key fold_in(rng, site) (one site per place in
  a model, so places draw independent masks); x itself when rng is None or rate is 0."""
  if rng is None or rate == 0.0:
    return x
  keep = jax.random.bernoulli(jax.random.fold_in(rng, site), 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


def cross_entropy_terms(logits: jax.Array, targets: jax.Array, smoothing: float = 0.0
                        ) -> tuple[jax.Array, jax.Array]:
  """Summed softmax cross-entropy over the non-padding targets, and how many there are.

  Args:
    logits: (..., V), taken in float32.
    targets: (...) int, 0 = padding.
    smoothing: label smoothing eps: the target distribution is (1 - eps) one-hot + eps / V
      (as `optax.smooth_labels`); 0 = the seed's loss.

  Returns:
    (loss sum, count) scalars: the seed's loss is their ratio.
  """
  total, count, _, _ = _cross_entropy(logits.astype(jnp.float32), targets, smoothing)
  return total, count


def _cross_entropy(logits, targets, smoothing=0.0):
  """(loss sum, count, log-normalisers (...), mask (...)) of float32 logits (..., V)."""
  log_norm = jax.nn.logsumexp(logits, axis=-1)
  mask = (targets != 0).astype(jnp.float32)
  picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  if smoothing:  # -sum_v q_v log p_v with q = (1 - eps) one-hot + eps / V
    per = log_norm - (1.0 - smoothing) * picked - smoothing * jnp.mean(logits, axis=-1)
  else:
    per = log_norm - picked
  return jnp.sum(per * mask), jnp.sum(mask), log_norm, mask


def dense_cross_entropy(dense_params: dict, x: jax.Array, targets: jax.Array,
                        smoothing: float = 0.0) -> tuple[jax.Array, jax.Array]:
  """`cross_entropy_terms(dense(dense_params, x), targets, smoothing)`, with its gradient
  written out.

  x (N, U), targets (N,), smoothing a Python float (label smoothing, 0 = none). Same value
  and gradients as differentiating the two calls, in fewer passes over the (N, V) logits:
  the gradient (softmax - target distribution) * mask is formed once and feeds the three
  products directly, and the bias gradient is a product with a ones vector, where
  XLA:CPU's column sum of the logits' gradient took longer than a matmul
  (bench/profile_train.py).
  """
  return _dense_cross_entropy(dense_params, x, targets, float(smoothing))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _dense_cross_entropy(dense_params, x, targets, smoothing):
  return _dense_cross_entropy_forward(dense_params, x, targets, smoothing)[0]


def _dense_cross_entropy_forward(dense_params, x, targets, smoothing):
  # The bias is added inside the elementwise passes that read the logits (here and in the
  # backward pass) rather than written into a second (N, V) array.
  products = (x @ dense_params["kernel"].astype(x.dtype)).astype(jnp.float32)
  bias = dense_params["bias"].astype(x.dtype).astype(jnp.float32)
  total, count, log_norm, mask = _cross_entropy(products + bias, targets, smoothing)
  return (total, count), (dense_params, x, targets, products, log_norm, mask)


def _dense_cross_entropy_backward(smoothing, saved, cotangents):
  dense_params, x, targets, products, log_norm, mask = saved
  kernel, bias = dense_params["kernel"], dense_params["bias"]
  scale = cotangents[0] * mask  # the count is a constant of the targets
  logits = products + bias.astype(x.dtype).astype(jnp.float32)
  grad = jnp.exp(logits - log_norm[:, None])
  if smoothing:  # softmax - ((1 - eps) one-hot + eps / V)
    grad = grad.at[jnp.arange(grad.shape[0]), targets].add(smoothing - 1.0)
    grad = (grad - smoothing / grad.shape[-1]) * scale[:, None]
  else:
    grad = grad.at[jnp.arange(grad.shape[0]), targets].add(-1.0) * scale[:, None]
  grad_c = grad.astype(x.dtype)
  d_params = {"kernel": (x.T @ grad_c).astype(kernel.dtype),
              "bias": (jnp.ones((grad.shape[0],), grad.dtype) @ grad).astype(bias.dtype)}
  d_x = grad_c @ kernel.astype(x.dtype).T
  return d_params, d_x, None


_dense_cross_entropy.defvjp(_dense_cross_entropy_forward, _dense_cross_entropy_backward)


def project_grid(dense_params: dict, features: jax.Array,
                 positions: jax.Array | None = None) -> jax.Array:
  """Encoder features (B, P, D) -> the grid the decoder attends over (B, P, U): the seed's
  Dense(units, relu) with `dense_params` (see `dense`), plus `positions` (P, U) if given.

  The seed's grid carries no explicit position, so "left of" must be read from whatever
  position the CNN features leak. A learned position embedding (an option of the GRUs, always
  on in the transformer) makes spatial relations learnable.
  """
  grid = jax.nn.relu(dense(dense_params, features))
  if positions is not None:
    grid = grid + positions.astype(grid.dtype)
  return grid


def dot_attention(query: jax.Array, value: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Luong dot-product attention, as `keras.layers.Attention()([query, value])`.

  The key is the value and the scores are NOT scaled by 1/sqrt(d): that is Keras's default.

  Args:
    query: (..., T, D), the GRU outputs.
    value: (..., P, D), the projected image grid.

  Returns:
    context (..., T, D) and attention weights (..., T, P), which sum to 1 over P.
  """
  scores = jnp.einsum("...td,...pd->...tp", query, value)
  # Softmax in float32 even under bfloat16 compute: it is where low precision hurts.
  weights = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(value.dtype)
  context = jnp.einsum("...tp,...pd->...td", weights, value)
  return context, weights


def residual_add(x: jax.Array, y: jax.Array) -> jax.Array:
  """`keras.layers.Add()([x, y])`: the skip connection around attention."""
  return x + y


def layer_norm(
    params: dict, x: jax.Array, epsilon: float = KERAS_LAYER_NORM_EPSILON
) -> jax.Array:
  """LayerNorm over the last axis with params {'scale': (D,), 'bias': (D,)}; x (..., D)."""
  x32 = x.astype(jnp.float32)
  mean = jnp.mean(x32, axis=-1, keepdims=True)
  variance = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
  normed = (x32 - mean) * jax.lax.rsqrt(variance + epsilon)
  return (normed * params["scale"] + params["bias"]).astype(x.dtype)


def heads(params: dict, x: jax.Array) -> jax.Array:
  """x (..., S, D) -> per-head projections (..., S, H, K) with params {'kernel': (D, H, K),
  'bias': (H, K)}: one of Keras MultiHeadAttention's query/key/value EinsumDense layers."""
  return (jnp.einsum("...sd,dhk->...shk", x, params["kernel"].astype(x.dtype))
          + params["bias"].astype(x.dtype))


def heads_first(keys: jax.Array, values: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Keys and values (..., S, H, K) from `heads` -> keys (..., H, K, S), values (..., H, S, K):
  the layouts `scaled_attention(..., heads_first=True)` reads with no transpose, for keys and
  values kept across decoding steps (XLA:CPU's dots want the contracted axis of the keys
  before S)."""
  return jnp.moveaxis(keys, -3, -1), jnp.swapaxes(values, -3, -2)


def fused_heads(params: list[dict], x: jax.Array) -> list[jax.Array]:
  """`heads(p, x)` for each p of `params` (e.g. query, key, value) as one matmul of their
  kernels side by side: fewer, larger products (one weight read per step in decoding, where
  XLA moves the loop-invariant concatenation out of the loop). x (..., S, D) -> a list of
  (..., S, H, K)."""
  kernel = jnp.stack([p["kernel"] for p in params], axis=1).astype(x.dtype)  # (D, N, H, K)
  bias = jnp.stack([p["bias"] for p in params]).astype(x.dtype)  # (N, H, K)
  out = jnp.einsum("...sd,dnhk->...snhk", x, kernel) + bias
  return [out[..., i, :, :] for i in range(len(params))]


def merge_heads(params: dict, x: jax.Array) -> jax.Array:
  """Per-head outputs (..., T, H, K) -> (..., T, D) with params {'kernel': (H, K, D),
  'bias': (D,)}: Keras MultiHeadAttention's output EinsumDense."""
  return (jnp.einsum("...thk,hkd->...td", x, params["kernel"].astype(x.dtype))
          + params["bias"].astype(x.dtype))


def scaled_attention(query: jax.Array, key: jax.Array, value: jax.Array,
                     mask: jax.Array | None = None, heads_first: bool = False
                     ) -> tuple[jax.Array, jax.Array]:
  """Multi-head scaled dot-product attention.

  Args:
    query: (..., T, H, K); key, value: (..., S, H, K), or with `heads_first` key
      (..., H, K, S) and value (..., H, S, K) (see `heads_first`).
    mask: broadcastable to (..., H, T, S), True where a query may attend; None = all.

  Returns:
    context (..., T, H, K) and weights (..., H, T, S), which sum to 1 over S.
  """
  k, v = ("...hks", "...hsk") if heads_first else ("...shk", "...shk")
  scores = jnp.einsum(f"...thk,{k}->...hts", query, key) / jnp.sqrt(
      jnp.asarray(query.shape[-1], query.dtype))
  scores = scores.astype(jnp.float32)
  if mask is not None:
    scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
  weights = jax.nn.softmax(scores, axis=-1).astype(value.dtype)
  return jnp.einsum(f"...hts,{v}->...thk", weights, value), weights


def attend_cache_and_new(query: jax.Array, cache_keys: jax.Array, cache_values: jax.Array,
                         key: jax.Array, value: jax.Array, visible: jax.Array) -> jax.Array:
  """`scaled_attention(..., heads_first=True)` of one new position over a key/value cache
  with its own key and value written in, computed without reading the written cache: the
  cache's visible positions and the new entry are scored side by side. So the step's
  write into the cache has no reader but the next step, and XLA updates it in place (a
  reader of the updated cache costs copies of the whole cache every step).

  Args:
    query: (B, T, H, K); cache_keys (B, H, K, S), cache_values (B, H, S, K); key, value
      (B, T, H, K), the new entry (T = 1).
    visible: broadcastable to (B, H, T, S), True where a cache position is attended (the
      earlier positions, not the one being written).

  Returns:
    context (B, T, H, K).
  """
  scale = jnp.sqrt(jnp.asarray(query.shape[-1], query.dtype))
  old = jnp.einsum("...thk,...hks->...hts", query, cache_keys) / scale
  new = jnp.einsum("...thk,...thk->...ht", query, key)[..., None] / scale  # (B, H, T, 1)
  old = jnp.where(visible, old.astype(jnp.float32), jnp.finfo(jnp.float32).min)
  weights = jax.nn.softmax(jnp.concatenate([old, new.astype(jnp.float32)], axis=-1), axis=-1)
  weights = weights.astype(cache_values.dtype)
  return (jnp.einsum("...hts,...hsk->...thk", weights[..., :-1], cache_values)
          + jnp.swapaxes(weights[..., -1:], -3, -2) * value)


def init_attention(key: jax.Array, units: int, num_heads: int, head_dim: int) -> dict:
  """Fresh multi-head attention params (`heads`, `merge_heads`) for width `units` (U), H heads
  of K, as keras.layers.MultiHeadAttention initialises them: glorot_uniform kernels, zero
  biases.

  {'query', 'key', 'value': {'kernel': (U, H, K), 'bias': (H, K)},
   'output': {'kernel': (H, K, U), 'bias': (U,)}}
  """
  glorot = jax.nn.initializers.glorot_uniform()
  u, h, k = units, num_heads, head_dim
  kq, kk, kv, ko = jax.random.split(key, 4)
  proj = lambda key: {"kernel": glorot(key, (u, h, k)), "bias": jnp.zeros((h, k))}
  return {"query": proj(kq), "key": proj(kk), "value": proj(kv),
          "output": {"kernel": glorot(ko, (h, k, u)), "bias": jnp.zeros((u,))}}
