"""Two processes on localhost (CPU collectives through gloo): each feeds its own rows of the
global batch, and together they train the same parameters as one process."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxcap import captioner
from jaxcap.model import decoders
from jaxcap.training import checkpoints
from jaxcap.training import loop as trainer

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


# Each process takes its rows of one global batch with `trainer.host_share`; a psum across the
# processes then adds up what all of them fed.
SHARE_SCRIPT = """
import json, sys
import jax
import numpy as np
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))
from jaxcap.training import loop as trainer
from jaxcap.training import parallel
batch = np.arange(8 * 2).reshape(8, 2)  # row i is (2i, 2i + 1)
mine = trainer.host_share(batch)
mesh = parallel.data_mesh()
fed = parallel.global_batch(mine, mesh)  # (8, 2) over both processes' devices
total = jax.jit(lambda x: x.sum(axis=0), out_shardings=parallel.replicated(mesh))(fed)
print(json.dumps({"rows": (mine[:, 0] // 2).tolist(), "global_shape": list(fed.shape),
                  "back": parallel.process_rows(fed).tolist(),
                  "fed": np.asarray(total).tolist()}))
"""


def run_processes(args_of, env):
  """Runs two processes (args_of(i) for i = 0, 1) to the end; their stdouts, or a failure
  that shows each failing process's first error."""
  procs = [subprocess.Popen([sys.executable] + args_of(i), cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  outputs = [p.communicate(timeout=600) for p in procs]
  # When one process fails the other usually aborts too; show the first error of each.
  failures = [f"process {i} exited {p.returncode}:\n{first_error(err)}"
              for i, (p, (_, err)) in enumerate(zip(procs, outputs)) if p.returncode != 0]
  assert not failures, "\n\n".join(failures)
  return [out for out, _ in outputs]


@pytest.mark.slow
def test_each_process_feeds_its_own_rows():
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  address = f"127.0.0.1:{free_port()}"
  outputs = run_processes(lambda i: ["-c", SHARE_SCRIPT, address, str(i)], env)
  shares = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
  assert shares[0]["rows"] == [0, 1, 2, 3] and shares[1]["rows"] == [4, 5, 6, 7]
  assert shares[0]["global_shape"] == shares[1]["global_shape"] == [8, 2]
  for share in shares:  # each process reads back its own rows of the global array
    assert [row[0] // 2 for row in share["back"]] == share["rows"]
  # Across both processes, every row of the batch is fed exactly once.
  batch = np.arange(8 * 2).reshape(8, 2)
  assert shares[0]["fed"] == shares[1]["fed"] == batch.sum(axis=0).tolist()


def test_host_share_refuses_an_uneven_split(monkeypatch):
  monkeypatch.setattr(jax, "process_count", lambda: 3)
  monkeypatch.setattr(jax, "process_index", lambda: 0)
  with pytest.raises(ValueError, match="multiple of the number of processes"):
    trainer.host_share(np.zeros((8, 2)))


def final_params(workdir):
  params, _, _, _ = captioner.restore_params(workdir)
  return params


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  single = subprocess.run([sys.executable] + ARGS + ["--workdir", str(tmp_path / "one")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert single.returncode == 0, single.stderr[-3000:]

  port = free_port()
  run_processes(lambda i: ARGS + ["--workdir", str(tmp_path / "two"),
                                  f"--coordinator_address=127.0.0.1:{port}",
                                  "--num_processes=2", f"--process_id={i}"], env)

  one, two = final_params(tmp_path / "one"), final_params(tmp_path / "two")
  meta = checkpoints.Checkpoints(tmp_path / "one", read_only=True).restore_meta()
  # The quickstart's config.seed is 0.
  initial = decoders.init(jax.random.key(0), decoders.spec_from_meta(meta))
  largest = lambda a, b: max(jax.tree.leaves(jax.tree.map(
      lambda x, y: float(np.abs(np.asarray(x) - np.asarray(y)).max()), a, b)))
  assert largest(one, initial) > 1e-3  # training moved the parameters
  assert largest(one, two) < 1e-5
