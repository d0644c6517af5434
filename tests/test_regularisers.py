"""Small-data regularisers, each doing what it says: label smoothing, dropout on the
embeddings / the GRU's output / the decoder's output, the tied embedding, the parameters'
moving average (EMA) and AdamW weight decay."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import ROOT, TINY_RESUME, train  # noqa: F401

from jaxcap import training
from jaxcap.model import decoders, layers
from jaxcap.training import checkpoints, config_checks

V, U, P, D, B, T = 23, 16, 4, 6, 5, 7


def spec_of(kind="gru", **options):
  extra = {"gru": {}, "gru_mha": {"num_heads": 2},
           "transformer": {"num_heads": 2, "num_layers": 1}}[kind]
  return decoders.DecoderSpec(kind, vocab_size=V, units=U, feature_dim=D, positions=P,
                              max_length=T + 1, **extra, **options)


def batch():
  features = jax.random.normal(jax.random.key(3), (B, P, D))
  tokens = jax.random.randint(jax.random.key(4), (B, T), 1, V).at[:, -2:].set(0)
  return features, tokens


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_label_smoothing_gradient_matches_autodiff_and_optax(smoothing):
  x = jax.random.normal(jax.random.key(0), (9, U))
  dense = {"kernel": jax.random.normal(jax.random.key(1), (U, V)),
           "bias": jax.random.normal(jax.random.key(2), (V,))}
  targets = jnp.array([1, 4, 0, 7, 22, 0, 3, 3, 9])

  def written(d, x):
    return layers.dense_cross_entropy(d, x, targets, smoothing)[0]

  def autodiff(d, x):
    return layers.cross_entropy_terms(layers.dense(d, x), targets, smoothing)[0]

  def by_optax(d, x):  # an independent statement of the smoothed loss
    labels = optax.smooth_labels(jax.nn.one_hot(targets, V), smoothing)
    per = optax.softmax_cross_entropy(layers.dense(d, x), labels)
    return jnp.sum(per * (targets != 0))

  value, grads = jax.value_and_grad(written, argnums=(0, 1))(dense, x)
  for reference in (autodiff, by_optax):
    ref_value, ref_grads = jax.value_and_grad(reference, argnums=(0, 1))(dense, x)
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  plain = layers.dense_cross_entropy(dense, x, targets)[0]
  assert (value != plain) if smoothing else (value == plain)


def test_label_smoothing_reaches_the_train_loss():
  spec = spec_of()
  params = decoders.init(jax.random.key(0), spec)
  features, tokens = batch()
  plain = training.loss_terms(params, spec, features, tokens)[0]
  smooth = training.loss_terms(params, spec, features, tokens, label_smoothing=0.2)[0]
  assert smooth != plain
  loss_fn = training.cross_entropy(spec, label_smoothing=0.2)
  np.testing.assert_allclose(loss_fn(params, {"features": features, "tokens": tokens},
                                     jax.random.key(9))[0], smooth, rtol=1e-6)


@pytest.mark.parametrize("kind,option", [
    ("gru", "embedding_dropout"), ("gru", "gru_output_dropout"), ("gru", "output_dropout"),
    ("gru_mha", "embedding_dropout"), ("gru_mha", "gru_output_dropout"),
    ("transformer", "output_dropout")])
def test_dropout_applies_only_while_training(kind, option):
  spec, plain_spec = spec_of(kind, **{option: 0.5}), spec_of(kind)
  assert spec.has_dropout and not plain_spec.has_dropout
  params = decoders.init(jax.random.key(0), plain_spec)
  features, tokens = batch()
  reference, _ = decoders.teacher_forced(params, plain_spec, features, tokens)
  evaluated, _ = decoders.teacher_forced(params, spec, features, tokens)  # no key: no dropout
  np.testing.assert_array_equal(evaluated, reference)
  a, _ = decoders.teacher_forced(params, spec, features, tokens, jax.random.key(1))
  b, _ = decoders.teacher_forced(params, spec, features, tokens, jax.random.key(2))
  assert not np.allclose(a, reference) and not np.allclose(a, b)
  if option == "output_dropout":  # on the outputs themselves: about half are zeroed
    zeros = np.mean(np.asarray(a) == 0)
    assert 0.35 < zeros < 0.65
    kept = np.asarray(a) != 0
    np.testing.assert_allclose(np.asarray(a)[kept], 2 * np.asarray(reference)[kept],
                               rtol=1e-5, atol=1e-6)
  # The train step's loss draws masks when any rate is set.
  loss_fn = training.cross_entropy(spec)
  data = {"features": features, "tokens": tokens}
  assert loss_fn(params, data, jax.random.key(1))[0] != loss_fn(params, data,
                                                                jax.random.key(2))[0]


def test_old_specs_and_configs_load_with_the_regularisers_off():
  new = spec_of()
  old = {k: v for k, v in new.to_dict().items()
         if k not in ("embedding_dropout", "gru_output_dropout", "output_dropout",
                      "tie_embedding")}
  assert decoders.DecoderSpec.from_dict(old) == new
  import ml_collections  # pylint: disable=g-import-not-at-top
  model = ml_collections.ConfigDict({"decoder": "gru", "units": U, "max_length": T + 1})
  assert decoders.spec_from_config(model, vocab_size=V, feature_dim=D, positions=P) == \
      dataclasses.replace(new, positions=P)
  with pytest.raises(ValueError, match="embedding_dropout"):
    spec_of(embedding_dropout=1.0)


@pytest.mark.parametrize("kind", ["gru", "transformer"])
def test_tied_embedding(kind):
  untied, tied = spec_of(kind), spec_of(kind, tie_embedding=True)
  plain = decoders.init(jax.random.key(0), untied)
  params = decoders.init(jax.random.key(0), tied)
  assert set(plain["logits"]) == {"kernel", "bias"}  # unchanged when off
  assert set(params["logits"]) == {"bias"}
  outputs = jax.random.normal(jax.random.key(5), (3, U))
  np.testing.assert_allclose(decoders.project(params, outputs),
                             outputs @ params["embedding"].T + params["logits"]["bias"],
                             rtol=1e-5, atol=1e-6)
  # The loss's gradient reaches the embedding through the projection as well as the input.
  features, tokens = batch()
  grads = jax.grad(lambda p: training.loss(p, tied, features, tokens))(params)
  assert "kernel" not in grads["logits"]
  only_inputs = jax.grad(lambda e: training.loss(dict(params, embedding=e), tied, features,
                                                 tokens))(params["embedding"])
  unused = np.setdiff1d(np.arange(V), np.asarray(tokens))  # rows no input reads
  assert np.abs(np.asarray(only_inputs)[unused]).sum() > 0
  # Teacher-forced logits and the step's agree with tying on.
  logits, _ = decoders.teacher_forced_logits(params, tied, features, tokens)
  context = decoders.prepare(params, tied, features)
  step_logits, _, _ = decoders.step(params, tied, context,
                                    decoders.initial_cache(params, tied, context, T),
                                    tokens[:, 0], 0)
  np.testing.assert_allclose(step_logits, logits[:, 0], rtol=1e-4, atol=1e-5)


def test_ema_follows_the_parameters():
  spec = spec_of()
  optimizer = training.keras_adam(1e-2)
  params = decoders.init(jax.random.key(0), spec)
  step = training.make_step(training.cross_entropy(spec), optimizer,
                            training.data_mesh())
  plain = training.init_train_state(params, optimizer)
  assert plain.ema is None
  state = training.init_train_state(params, optimizer, ema_decay=0.9)
  features, tokens = batch()
  data = {"features": features, "tokens": tokens}
  expected = jax.tree.map(np.asarray, params)
  for i in range(1, 5):
    state, _ = step(state, data)
    plain, _ = step(plain, data)
    d = min(0.9, (1 + i) / (10 + i))
    expected = jax.tree.map(lambda e, p: d * e + (1 - d) * np.asarray(p), expected,
                            state.params)
  for a, b in zip(jax.tree.leaves(state.ema.params), jax.tree.leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(plain.params)):
    np.testing.assert_array_equal(a, b)  # the average does not touch training
  assert state.eval_params is state.ema.params and plain.eval_params is plain.params


def test_checkpoints_give_readers_the_average(tmp_path):
  spec = spec_of()
  params = decoders.init(jax.random.key(0), spec)
  average = jax.tree.map(lambda p: p + 1.0, params)
  ckpt = checkpoints.Checkpoints(tmp_path)
  ckpt.save(1, {"spec": spec.to_dict()}, params=params, opt_state={"n": np.zeros(2)})
  ckpt.save(2, {"spec": spec.to_dict()}, params=params, opt_state={"n": np.zeros(2)},
            ema_params=average)
  ckpt.wait()
  assert ckpt.restore_ema(1, params) is None
  for step, want in ((1, params), (2, average)):
    got = ckpt.restore_params(step)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_array_equal(a, b)
  restored = ckpt.restore_ema(2, params)
  np.testing.assert_array_equal(restored["embedding"], average["embedding"])
  training_params, _ = ckpt.restore_training(2, params, {"n": np.zeros(2)})
  np.testing.assert_array_equal(training_params["embedding"], params["embedding"])
  ckpt.close()


def test_weight_decay_shrinks_matrices_only():
  params = {"kernel": jnp.ones((3, 2)), "bias": jnp.ones((2,)), "embedding": jnp.ones((4, 2))}
  zero = jax.tree.map(jnp.zeros_like, params)
  for decay in (0.0, 0.5):
    optimizer = training.keras_adam(0.1, weight_decay=decay)
    updates, _ = optimizer.update(zero, optimizer.init(params), params)
    new = optax.apply_updates(params, updates)
    np.testing.assert_allclose(new["bias"], 1.0)
    np.testing.assert_allclose(new["kernel"], 1.0 - 0.1 * decay, rtol=1e-6)
    np.testing.assert_allclose(new["embedding"], 1.0 - 0.1 * decay, rtol=1e-6)


def test_config_checks_name_each_field():
  from configs import quickstart  # pylint: disable=g-import-not-at-top
  config = quickstart.get_config()
  config_checks.validate(config)  # the defaults pass
  bad = {"train.label_smoothing": 1.0, "train.weight_decay": -1.0, "train.ema_decay": 1.0,
         "model.embedding_dropout": 1.5, "model.gru_output_dropout": -0.1,
         "model.output_dropout": 1.0, "decoding.no_repeat_ngram": -2}
  for field, value in bad.items():
    section, name = field.split(".")
    config[section][name] = value
  with pytest.raises(ValueError) as error:
    config_checks.validate(config)
  for field in bad:
    assert f"\n  {field} = " in str(error.value), field


@pytest.mark.slow
def test_train_with_every_regulariser_resumes_exactly(env, tmp_path):
  """train.py with all of them on: 8 steps at once, and 4 + 4 after a restart, leave the
  same parameters, optimizer state and average; sample.py captions with the average."""
  flags = ["--config.train.label_smoothing=0.1", "--config.train.weight_decay=0.01",
           "--config.train.ema_decay=0.9", "--config.model.embedding_dropout=0.2",
           "--config.model.gru_output_dropout=0.2", "--config.model.output_dropout=0.2",
           "--config.model.tie_embedding=True", "--config.model.init_hidden_from_image=False"]
  whole, halves = tmp_path / "whole", tmp_path / "halves"
  result = train(env, whole, "--config.train.num_steps=8", *flags)
  assert result.returncode == 0, result.stderr[-3000:]
  for steps in (4, 8):
    result = train(env, halves, f"--config.train.num_steps={steps}", *flags)
    assert result.returncode == 0, result.stderr[-3000:]
  items = {name: checkpoints.ocp.args.StandardRestore()
           for name in ("params", "opt_state", checkpoints.EMA)}
  restored = []
  for workdir in (whole, halves):
    ckpt = checkpoints.Checkpoints(workdir, read_only=True)
    restored.append(ckpt._restore(8, **items))
    ckpt.close()
  for name in items:
    a, b = restored[0][name], restored[1][name]
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert "kernel" not in restored[0]["params"]["logits"]  # tied
  ema, raw = restored[0][checkpoints.EMA], restored[0]["params"]
  assert not np.allclose(ema["embedding"], raw["embedding"])
  best = checkpoints.Checkpoints(whole, read_only=True, kind=checkpoints.BEST)
  saved = best.restore_params(best.latest_step())  # best/ holds the average as its params
  assert jax.tree.structure(saved) == jax.tree.structure(ema)
  best.close()
