"""The decoder plug-in shape: every decoder is a module with `decoders.Decoder`'s members,
`decoders.REGISTRY` is the one list of them, and a new one needs nothing but its module and a
registry line (`toy_decoder`, registered here only, trains and decodes through the real
train step and loops)."""

import ast
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import toy_decoder

import jaxcap
from jaxcap import compat, decoding, training
from jaxcap.decoding.options import DecodeOptions
from jaxcap.model import decoders

V, U, P, D, B, L = 17, 8, 4, 6, 4, 7
START, END = 2, 3


@pytest.fixture
def toy(monkeypatch):
  """The toy decoder, registered for one test: the one line a new decoder adds."""
  monkeypatch.setitem(decoders.REGISTRY, "toy", toy_decoder)
  return decoders.DecoderSpec("toy", vocab_size=V, units=U, feature_dim=D, positions=P,
                              max_length=L)


@pytest.mark.parametrize("kind", sorted(decoders.REGISTRY))
def test_every_registered_module_is_a_decoder(kind):
  module = decoders.REGISTRY[kind]
  assert isinstance(module, decoders.Decoder), kind
  assert set(module.OPTIONS) <= set(decoders.OPTION_RANGES), kind
  # A config with no options gives each its module's default.
  model = ml_collections.ConfigDict(dict(decoder=kind, units=U, max_length=L))
  spec = decoders.spec_from_config(model, vocab_size=V, feature_dim=D, positions=P)
  for name in decoders.OPTION_RANGES:
    assert getattr(spec, name) == module.OPTIONS.get(name, 0), (kind, name)
  assert decoders.get(spec) is module
  assert decoders.attention_description(spec) == module.attention_description(spec)


def test_kinds_are_named_only_in_the_decoder_package():
  """No module outside jaxcap/model/decoders/ holds a kind as a string to branch on (compat.py
  names the seed's "gru" for metas written before there were kinds)."""
  root = pathlib.Path(jaxcap.__file__).parent
  found = []
  for path in sorted(root.rglob("*.py")):
    relative = path.relative_to(root).as_posix()
    if relative.startswith("model/decoders/") or relative == "compat.py":
      continue
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Constant) and node.value in decoders.REGISTRY:
        found.append(f"{relative}:{node.lineno}: {node.value!r}")
  assert not found, found


def test_a_registered_decoder_is_a_kind_everywhere(toy):
  assert "toy" in decoders.KINDS and decoders.get(toy) is toy_decoder
  # Options it does not list must stay 0; its kind reads none of a config's.
  with pytest.raises(ValueError, match="model.num_heads does not apply to decoder 'toy'"):
    decoders.DecoderSpec("toy", vocab_size=V, units=U, feature_dim=D, num_heads=2)
  model = ml_collections.ConfigDict(dict(decoder="toy", units=U, max_length=L,
                                         grid_position_embedding=True, dropout=0.1))
  assert decoders.spec_from_config(model, vocab_size=V, feature_dim=D, positions=P) == toy
  model.num_layers = 2
  with pytest.raises(ValueError, match="model.num_layers: not used by decoder 'toy'"):
    decoders.spec_from_config(model, vocab_size=V, feature_dim=D, positions=P)
  assert decoders.attention_description(toy) == "the toy's attention over the grid"


def test_unregistered_kind_names_the_registered_ones():
  with pytest.raises(ValueError) as e:
    decoders.DecoderSpec("toy", vocab_size=V, units=U, feature_dim=D)
  assert str(e.value) == ("model.decoder must be one of "
                          f"{', '.join(decoders.REGISTRY)}, not 'toy'")


def toy_batch():
  """features (B, P, D), tokens (B, L) from <start> to <end>."""
  features = jax.random.normal(jax.random.key(1), (B, P, D))
  tokens = np.array(jax.random.randint(jax.random.key(2), (B, L), 4, V))
  tokens[:, 0], tokens[:, -1] = START, END
  return features, tokens


def test_toy_decoder_steps_as_it_teacher_forces(toy):
  """Through the package's dispatchers only, as the loops call it."""
  spec = toy
  params = decoders.init(jax.random.key(0), spec)
  features, tokens = toy_batch()
  full, full_attention = decoders.teacher_forced_logits(params, spec, features, tokens)
  context = decoders.prepare(params, spec, features)
  cache = decoders.initial_cache(params, spec, context, L)

  def one_token(cache, token_and_index):  # the loops' use: a cache carried through a scan
    logits, cache, attention = decoders.step(params, spec, context, cache, *token_and_index)
    return cache, (logits, attention)

  _, (logits, attention) = jax.lax.scan(one_token, cache, (tokens.T, jnp.arange(L)))
  np.testing.assert_allclose(jnp.swapaxes(logits, 0, 1), full, atol=1e-5)
  np.testing.assert_allclose(jnp.swapaxes(attention, 0, 1), full_attention, atol=1e-5)


@pytest.mark.slow
def test_toy_decoder_trains_and_decodes_through_the_real_loops(toy):
  spec = toy
  params = decoders.init(jax.random.key(0), spec)
  features, tokens = toy_batch()

  # The train step: a few steps on one batch lower its loss.
  optimizer = training.keras_adam(1e-2)
  state = training.init_train_state(params, optimizer)
  step = training.TrainStep(optimizer, spec)
  n = jax.local_device_count()
  batch = (np.tile(np.asarray(features), (n, 1, 1)), np.tile(tokens, (n, 1)))
  before = float(training.loss(params, spec, features, tokens))
  for _ in range(5):
    state, _ = step(state, *batch)
  trained = jax.device_get(state.params)
  assert jax.tree.map(jnp.shape, trained) == jax.tree.map(jnp.shape, params)
  assert float(training.loss(trained, spec, features, tokens)) < before - 1e-3

  # Greedy: the compiled loop equals the Python reference; beam search of 1 equals greedy.
  key = jax.random.key(3)
  run = lambda options: decoding.decode_jit(trained, spec, features, key, options,
                                            start_id=START, end_id=END, max_length=L)
  greedy, attention, _ = run(DecodeOptions("greedy"))
  expected = decoding.python_loop(trained, spec, features, key, DecodeOptions("greedy"),
                                  start_id=START, end_id=END, max_length=L)
  np.testing.assert_array_equal(np.asarray(greedy), expected)
  assert attention.shape == (B, L, P)
  beam1, _, _ = run(DecodeOptions("beam", beam_size=1))
  np.testing.assert_array_equal(np.asarray(beam1), np.asarray(greedy))
  beam3, _, _ = run(DecodeOptions("beam", beam_size=3))
  assert beam3.shape == (B, L)


def test_pre_release_meta_gives_the_gru_spec():
  """Workdirs from before decoder kinds saved "sizes" and the config, not "spec"."""
  old = {"sizes": {"vocab_size": V, "units": U, "feature_dim": D, "positions": P,
                   "position_embedding": False, "init_hidden": True},
         "config": {"model": {"max_length": L}}}
  expected = decoders.DecoderSpec("gru", vocab_size=V, units=U, feature_dim=D, positions=P,
                                  max_length=L, init_hidden_from_image=True)
  assert compat.decoder_spec_from_sizes(old) == expected
  assert decoders.spec_from_meta(old) == expected
  del old["sizes"]["positions"], old["sizes"]["init_hidden"]  # the oldest held neither
  old["sizes"]["position_embedding"] = False
  assert compat.decoder_spec_from_sizes(old) == decoders.DecoderSpec(
      "gru", vocab_size=V, units=U, feature_dim=D, positions=0, max_length=L)
