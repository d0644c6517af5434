"""bench/profile_train.py's reading of compiled HLO: which ops it puts in which group."""

import jax
import numpy as np
import pytest

from bench import profile_train
from jaxcap import training
from jaxcap.model import decoders


@pytest.mark.slow
def test_groups_of_a_small_train_step():
  vocab = 97
  spec = decoders.DecoderSpec("gru", vocab_size=vocab, units=8, feature_dim=6)
  params = decoders.init(jax.random.key(0), spec)
  optimizer = training.keras_adam(1e-3)
  step = training.make_train_step(optimizer, spec)
  state = training.init_train_state(params, optimizer)
  n = jax.local_device_count()
  features = np.zeros((2 * n, 4, 6), np.float32)
  tokens = np.ones((2 * n, 5), np.int32)
  ops = profile_train.hlo_ops(step.lower(state, features, tokens).compile().as_text())
  groups = {name: profile_train.group_of(name, ops, vocab) for name in ops}
  vocab_dots = [n for n, g in groups.items() if g == "vocabulary projection"]
  assert vocab_dots and all(ops[n].is_dot for n in vocab_dots)
  assert any(g == "softmax / loss" for g in groups.values())
  recurrence = [n for n, g in groups.items() if g == "GRU recurrence"]
  assert recurrence and all("/while/" in ops[n].op_name for n in recurrence)
  assert set(groups.values()) <= set(profile_train.GROUPS)
