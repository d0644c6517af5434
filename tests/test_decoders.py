"""Every decoder: the cached one-step path equals the teacher-forced pass, and the spec's rules."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcap.model import decoders

V, U, P, D, B, L = 23, 16, 6, 10, 4, 9


def make_spec(kind, **kw):
  extra = {"gru": {}, "gru_mha": {"num_heads": 2},
           "transformer": {"num_heads": 2, "num_layers": 2, "dropout": 0.2}}.get(kind, {})
  return decoders.DecoderSpec(kind, vocab_size=V, units=U, feature_dim=D, positions=P,
                              max_length=L, **{**extra, **kw})


@pytest.fixture(scope="module", params=decoders.KINDS)
def model(request):
  spec = make_spec(request.param)
  params = decoders.init(jax.random.key(0), spec)
  features = jax.random.normal(jax.random.key(1), (B, P, D))
  tokens = jax.random.randint(jax.random.key(2), (B, L), 2, V)
  return spec, params, features, tokens


@pytest.mark.slow
def test_step_by_step_equals_teacher_forced(model):
  spec, params, features, tokens = model
  full, full_attention = decoders.teacher_forced_logits(params, spec, features, tokens)
  context = decoders.prepare(params, spec, features)
  cache = decoders.initial_cache(params, spec, context, L)
  step = jax.jit(lambda c, t, i: decoders.step(params, spec, context, c, t, i))
  for t in range(L):
    logits, cache, attention = step(cache, tokens[:, t], jnp.int32(t))
    np.testing.assert_allclose(logits, full[:, t], atol=1e-5)
    np.testing.assert_allclose(attention, full_attention[:, t], atol=1e-5)
  np.testing.assert_allclose(np.asarray(full_attention).sum(-1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_later_tokens_do_not_change_earlier_outputs(model):
  """Causality: what position t predicts depends on tokens <= t only."""
  spec, params, features, tokens = model
  changed = tokens.at[:, 5:].set((tokens[:, 5:] + 1) % V)
  a, _ = decoders.teacher_forced_logits(params, spec, features, tokens)
  b, _ = decoders.teacher_forced_logits(params, spec, features, changed)
  np.testing.assert_allclose(a[:, :5], b[:, :5], atol=1e-6)
  assert float(jnp.abs(a[:, 5:] - b[:, 5:]).max()) > 1e-4


@pytest.mark.slow
def test_the_image_matters(model):
  spec, params, features, tokens = model
  a, _ = decoders.teacher_forced_logits(params, spec, features, tokens)
  b, _ = decoders.teacher_forced_logits(params, spec, features[::-1], tokens)
  assert float(jnp.abs(a[0] - b[0]).max()) > 1e-4


@pytest.mark.slow
def test_dropout_only_with_a_key(model):
  spec, params, features, tokens = model
  plain, _ = decoders.teacher_forced(params, spec, features, tokens)
  again, _ = decoders.teacher_forced(params, spec, features, tokens, None)
  dropped, _ = decoders.teacher_forced(params, spec, features, tokens, jax.random.key(4))
  np.testing.assert_array_equal(plain, again)
  differs = float(jnp.abs(plain - dropped).max()) > 1e-3
  assert differs == (spec.dropout > 0)


@pytest.mark.slow
def test_cached_step_cost_does_not_grow_with_length():
  """A Transformer step attends to cached keys: its FLOPs are a small fraction of re-running
  the whole prefix, and the same at every position (one compiled program, index traced)."""
  spec = make_spec("transformer", dropout=0.0)
  params = decoders.init(jax.random.key(0), spec)
  features = jnp.zeros((B, P, D))
  context = decoders.prepare(params, spec, features)
  cache = decoders.initial_cache(params, spec, context, L)

  def flops(fn, *args):
    return jax.jit(fn).lower(*args).compile().cost_analysis()["flops"]

  step = flops(lambda c, t, i: decoders.step(params, spec, context, c, t, i)[0], cache,
               jnp.zeros((B,), jnp.int32), jnp.int32(3))
  whole = flops(lambda t: decoders.teacher_forced_logits(params, spec, features, t)[0],
                jnp.zeros((B, L), jnp.int32))
  assert step < 2.0 * whole / L, (step, whole)
  # The cache's shapes are fixed: writing position i never reallocates.
  _, new_cache, _ = decoders.step(params, spec, context, cache, jnp.zeros((B,), jnp.int32), 3)
  assert jax.tree.map(jnp.shape, new_cache) == jax.tree.map(jnp.shape, cache)


def test_spec_rules():
  with pytest.raises(ValueError, match="model.decoder"):
    make_spec("lstm")
  with pytest.raises(ValueError, match="num_layers"):
    make_spec("gru", num_layers=2)
  with pytest.raises(ValueError, match="multiple of model.num_heads"):
    make_spec("gru_mha", num_heads=3)
  with pytest.raises(ValueError, match="init_hidden_from_image"):
    make_spec("transformer", init_hidden_from_image=True)


def test_spec_from_config_ignores_other_decoders_options_but_refuses_mixing():
  import ml_collections  # pylint: disable=g-import-not-at-top
  model = ml_collections.ConfigDict(dict(
      decoder="transformer", units=U, max_length=L, grid_position_embedding=True,
      init_hidden_from_image=True, num_heads=0, key_dim=0, num_layers=0, mlp_dim=0,
      dropout=0.1))
  spec = decoders.spec_from_config(model, vocab_size=V, feature_dim=D, positions=P)
  assert (spec.kind, spec.num_heads, spec.num_layers, spec.init_hidden_from_image) == (
      "transformer", decoders.DEFAULT_NUM_HEADS, decoders.DEFAULT_NUM_LAYERS, False)
  model.decoder = "gru"
  spec = decoders.spec_from_config(model, vocab_size=V, feature_dim=D, positions=P)
  assert (spec.dropout, spec.num_heads, spec.init_hidden_from_image) == (0.0, 0, True)
  model.num_layers = 3
  with pytest.raises(ValueError, match="model.num_layers: not used by decoder 'gru'"):
    decoders.spec_from_config(model, vocab_size=V, feature_dim=D, positions=P)


def test_spec_round_trips_and_old_gru_meta_loads():
  spec = make_spec("transformer")
  assert decoders.spec_from_meta({"spec": spec.to_dict()}) == spec
  old = {"sizes": {"vocab_size": V, "units": U, "feature_dim": D, "positions": P,
                   "position_embedding": True, "init_hidden": False},
         "config": {"model": {"max_length": L}}}
  assert decoders.spec_from_meta(old) == make_spec("gru", grid_position_embedding=True)


def test_a_checkpoint_of_another_decoder_is_one_clear_message():
  from jaxcap.data import text
  from jaxcap.training import checkpoints  # pylint: disable=g-import-not-at-top
  vocab = text.Vocabulary.build(["a b c"], 10)
  saved = checkpoints.make_meta({}, make_spec("gru"), vocab, "mobilenet_v2")
  with pytest.raises(checkpoints.CheckpointMismatchError,
                     match=r"decoder: checkpoint 'gru', config 'transformer' \(model.decoder\)"):
    checkpoints.check_compatible(saved, spec=make_spec("transformer"), vocab=vocab,
                                 encoder="mobilenet_v2", where="W")
  checkpoints.check_compatible(saved, spec=make_spec("gru"), vocab=vocab,
                               encoder="mobilenet_v2", where="W")  # the same: no error
