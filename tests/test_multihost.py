"""Two processes on localhost (CPU collectives through gloo) train the same parameters as one
process on the same global batch."""

import os
import socket
import subprocess
import sys

import jax
import numpy as np

from jaxcap import checkpoints, decoders, inference

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ["train.py", "--config", "configs/quickstart.py",
        "--config.data.num_train=64", "--config.data.num_val=16", "--config.data.num_test=0",
        "--config.model.units=16", "--config.train.batch_size=16",
        "--config.train.num_steps=6", "--config.train.log_every=3",
        "--config.train.eval_every=6", "--config.train.eval_examples=8",
        "--config.train.checkpoint_every=6"]


def free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def first_error(stderr: str) -> str:
  lines = [l for l in stderr.splitlines() if not l.startswith("training:")]
  start = next((i for i, l in enumerate(lines)
                if l.startswith(("E", "F", "Traceback")) and not l.startswith("Extension")), 0)
  return "\n".join(lines[start:start + 40])


def final_params(workdir):
  params, _, _ = inference.restore_params(workdir)
  return params


def test_two_processes_equal_one(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  single = subprocess.run([sys.executable] + ARGS + ["--workdir", str(tmp_path / "one")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert single.returncode == 0, single.stderr[-3000:]

  port = free_port()
  procs = [subprocess.Popen(
      [sys.executable] + ARGS + ["--workdir", str(tmp_path / "two"),
                                 f"--coordinator_address=127.0.0.1:{port}",
                                 "--num_processes=2", f"--process_id={i}"],
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  outputs = [p.communicate(timeout=600) for p in procs]
  # When one process fails the other usually aborts too; show the first error of each.
  failures = [f"process {i} exited {p.returncode}:\n{first_error(err)}"
              for i, (p, (_, err)) in enumerate(zip(procs, outputs)) if p.returncode != 0]
  assert not failures, "\n\n".join(failures)

  one, two = final_params(tmp_path / "one"), final_params(tmp_path / "two")
  meta = checkpoints.Checkpoints(tmp_path / "one", read_only=True).restore_meta()
  initial = decoders.init(jax.random.key(0), decoders.spec_from_meta(meta))  # the quickstart's config.seed is 0
  largest = lambda a, b: max(jax.tree.leaves(jax.tree.map(
      lambda x, y: float(np.abs(np.asarray(x) - np.asarray(y)).max()), a, b)))
  assert largest(one, initial) > 1e-3  # training moved the parameters
  assert largest(one, two) < 1e-5
