"""Helpers shared by test files: the repository's scripts run in a subprocess on tiny shapes.

(Test files import this module, never each other; tests/seed_keras.py holds the seed's Keras
models for the parity tests.)"""

import os
import subprocess
import sys

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
