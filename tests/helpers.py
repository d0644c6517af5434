"""Helpers shared by test files: the repository's scripts run in a subprocess on tiny shapes.

(Test files import this module, never each other; tests/seed_keras.py holds the seed's Keras
models for the parity tests.)"""

import contextlib
import json
import os
import subprocess
import sys

import jax

from jaxcap.model import decoders
from jaxcap.training import checkpoints

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    "--config.data.num_train=96", "--config.data.num_val=32", "--config.data.num_test=8",
    "--config.model.units=16", "--config.train.batch_size=16",
    "--config.train.log_every=2", "--config.train.eval_every=4",
    "--config.train.eval_examples=16", "--config.train.checkpoint_every=4",
]


def run(args, **kwargs):
  return subprocess.run([sys.executable] + args, cwd=ROOT, capture_output=True, text=True,
                        timeout=600, **kwargs)


def train_cmd(workdir, *extra):
  return ["train.py", "--config", "configs/quickstart.py", "--workdir", str(workdir)] + TINY + \
      list(extra)


# Tiny and fast: 32 px images (a 1x1 grid), 8 units, constant learning rate so that a rerun
# with a larger num_steps trains exactly like the first run did.
TINY_RESUME = [
    "--config.data.num_train=48", "--config.data.num_val=16", "--config.data.num_test=0",
    "--config.encoder.image_size=32", "--config.model.units=8",
    "--config.train.batch_size=8", "--config.train.lr_schedule=constant",
    "--config.train.log_every=2", "--config.train.eval_every=4",
    "--config.train.eval_examples=16", "--config.train.checkpoint_every=4",
    "--config.train.keep_checkpoints=2",
]


def train(env, workdir, *flags, fault=None, popen=False):
  cmd = [sys.executable, "train.py", "--config", "configs/quickstart.py",
         "--workdir", str(workdir)] + TINY_RESUME + list(flags)
  env = dict(env, JAXCAP_FAULT=fault) if fault else env
  if popen:
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
  return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def metrics_rows(workdir):
  return [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]


# The small decoding model of test_decoding.py and test_options_as_data.py.
V, U, P, D, B, MAX = 19, 16, 6, 10, 8, 10
START, END = 2, 3


def make_model(kind):
  extra = {"gru": {}, "gru_mha": {"num_heads": 2},
           "transformer": {"num_heads": 2, "num_layers": 1}}[kind]
  spec = decoders.DecoderSpec(kind, vocab_size=V, units=U, feature_dim=D,
                              positions=P, max_length=MAX, **extra)
  params = decoders.init(jax.random.key(1), spec)
  # Sharper distributions, and <end> likely enough that some captions finish early and some
  # do not; greedy and beam then disagree often.
  params["logits"]["kernel"] = params["logits"]["kernel"] * 3
  params["logits"]["bias"] = params["logits"]["bias"].at[END].set(1.0)
  params["logits"]["bias"] = params["logits"]["bias"].at[START].set(-1e4)  # as if trained
  features = jax.random.normal(jax.random.key(2), (B, P, D))
  return spec, params, features


@contextlib.contextmanager
def compile_events(prefixes=("/jax/core/compile/",)):
  """The compile (and trace) events jax.monitoring reports inside (those starting with one of
  `prefixes`)."""
  events = []

  def listen(event, duration, **_):
    if event.startswith(tuple(prefixes)):
      events.append(event)

  jax.monitoring.register_event_duration_secs_listener(listen)
  try:
    yield events
  finally:
    jax.monitoring.unregister_event_duration_listener(listen)


def checkpoint_state(workdir, step):
  """(params, opt_state) of checkpoint `step`, restored without a template."""
  ckpt = checkpoints.Checkpoints(workdir, read_only=True)
  restored = ckpt._restore(step, params=checkpoints.ocp.args.StandardRestore(),
                           opt_state=checkpoints.ocp.args.StandardRestore())
  ckpt.close()
  return restored["params"], restored["opt_state"]
