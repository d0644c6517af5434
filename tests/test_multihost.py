"""Two processes on localhost (CPU collectives through gloo): each reads, encodes and feeds only
its own shard of the images, and together they train the same parameters as one process with
the same shards; a killed two-process run resumes to the same parameters, bit for bit."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from helpers import ROOT, checkpoint_state

from jaxcap import captioner
from jaxcap.data import pipeline
from jaxcap.model import decoders
from jaxcap.training import checkpoints

ARGS = ["train.py", "--config", "configs/quickstart.py",
        "--config.data.num_train=64", "--config.data.num_val=16", "--config.data.num_test=0",
        "--config.model.units=16", "--config.train.batch_size=16",
        "--config.train.num_steps=6",
        "--config.train.eval_every=6", "--config.train.eval_examples=8",
        "--config.train.checkpoint_every=4", "--config.train.log_every=1"]


def free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def first_error(stderr: str) -> str:
  lines = [l for l in stderr.splitlines() if not l.startswith("training:")]
  start = next((i for i, l in enumerate(lines)
                if l.startswith(("E", "F", "Traceback")) and not l.startswith("Extension")), 0)
  return "\n".join(lines[start:start + 40])


# Each process holds the features of its own shard only (8 images, 2 shards, feature = image
# number) and feeds its shard's part of each batch; a psum across the processes then adds up
# the whole global batch, which every process can name (`TrainBatches.rows`).
SHARE_SCRIPT = """
import json, sys
import jax
import numpy as np
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))
from jaxcap.data import pipeline, text
from jaxcap.training import parallel
local = pipeline.process_shards(2)
ranges = pipeline.shard_ranges(8, 2)
start, stop = ranges[local.start][0], ranges[local.stop - 1][1]
features = np.arange(start, stop, dtype=np.float16).reshape(-1, 1, 1)  # only this shard's
captions = [["a red circle"]] * 8
vocab = text.Vocabulary.build([c[0] for c in captions], 10)
data = pipeline.with_shards(pipeline.make_caption_set(
    features, captions, vocab, 6, False, feature_offset=start), ranges, local)
batches = pipeline.TrainBatches(data, 4, seed=0)
mine, _ = batches(3)
mesh = parallel.data_mesh()
fed = parallel.global_batch(mine, mesh)  # (4, 1, 1) over both processes' devices
total = jax.jit(lambda x: x.sum(), out_shardings=parallel.replicated(mesh))(fed)
print(json.dumps({"held": [start, stop], "mine": mine.ravel().tolist(),
                  "global_shape": list(fed.shape), "fed": float(total),
                  "whole": [r.tolist() for r in batches.rows(3)]}))
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
def test_each_process_feeds_its_own_shard():
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  address = f"127.0.0.1:{free_port()}"
  outputs = run_processes(lambda i: ["-c", SHARE_SCRIPT, address, str(i)], env)
  shares = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
  assert shares[0]["held"] == [0, 4] and shares[1]["held"] == [4, 8]
  whole = shares[0]["whole"]
  assert whole == shares[1]["whole"] and len(whole) == 2 and len(whole[0]) == 2
  for share, shard in zip(shares, whole):  # two images of its own shard each
    assert share["mine"] == shard and all(share["held"][0] <= x < share["held"][1]
                                          for x in share["mine"])
    assert share["global_shape"] == [4, 1, 1]
  # Across both processes, every row of the global batch is fed exactly once.
  assert shares[0]["fed"] == shares[1]["fed"] == sum(whole[0] + whole[1])


def test_process_shards_refuse_an_uneven_split(monkeypatch):
  monkeypatch.setattr(jax, "process_count", lambda: 3)
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  assert pipeline.process_shards(6) == range(2, 4)
  with pytest.raises(ValueError, match="multiple of the number of processes"):
    pipeline.process_shards(4)


def final_params(workdir):
  return captioner.restore_params(workdir)[0]  # (params, meta, step, directory)


def largest_difference(a, b):
  return max(jax.tree.leaves(jax.tree.map(
      lambda x, y: float(np.abs(np.asarray(x) - np.asarray(y)).max()), a, b)))


def train_two(workdir, *flags, fault=None):
  """Two train.py processes on `workdir`; their stdouts (a fault kills both at that point)."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", **({"JAXCAP_FAULT": fault} if fault else {}))
  port = free_port()
  args = lambda i: ARGS + list(flags) + [
      "--workdir", str(workdir), f"--coordinator_address=127.0.0.1:{port}",
      "--num_processes=2", f"--process_id={i}"]
  if fault is None:
    return run_processes(args, env)
  procs = [subprocess.Popen([sys.executable] + args(i), cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  for p in procs:
    p.communicate(timeout=600)
  assert all(p.returncode != 0 for p in procs), [p.returncode for p in procs]
  return None


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("two") / "w"
  return workdir, train_two(workdir)


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path, two_processes):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  # One process with the same two shards takes the same global batches.
  single = subprocess.run([sys.executable] + ARGS + ["--config.data.shards=2",
                                                     "--workdir", str(tmp_path / "one")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert single.returncode == 0, single.stderr[-3000:]
  assert "process 0 of 1: 64 of 64 images in this shard (val 16 of 16)" in single.stdout
  workdir, outputs = two_processes
  for i, out in enumerate(outputs):  # each encoded and held half of the images
    assert f"process {i} of 2: 32 of 64 images in this shard (val 8 of 16)" in out, out

  one, two = final_params(tmp_path / "one"), final_params(workdir)
  meta = checkpoints.Checkpoints(tmp_path / "one", read_only=True).restore_meta()
  # The quickstart's config.seed is 0.
  initial = decoders.init(jax.random.key(0), decoders.spec_from_meta(meta))
  assert largest_difference(one, initial) > 1e-3  # training moved the parameters
  assert largest_difference(one, two) < 1e-5


@pytest.mark.slow
def test_killed_two_process_run_resumes_to_the_same_parameters(tmp_path, two_processes):
  reference, _ = two_processes
  workdir = tmp_path / "w"
  # Killed after step 5's metrics row, with checkpoints every 2 steps (saved in the
  # background: the newest committed one, with the Grain iterator state saved there, is
  # where it resumes).
  train_two(workdir, "--config.train.checkpoint_every=2", fault="metrics.after_write:5")
  saved = checkpoints.Checkpoints(workdir, read_only=True)
  step = saved.steps()[-1]
  assert step in (2, 4)
  assert saved.restore_meta(step)["loader_state"] == {"next_index": step}
  outputs = train_two(workdir)
  assert all(f"resumed from step {step}" in out for out in outputs), outputs
  for w in (workdir, reference):
    assert checkpoints.Checkpoints(w, read_only=True).steps()[-1] == 6
  # Parameters and optimizer state of the last checkpoint, bit for bit.
  a, b = checkpoint_state(workdir, 6), checkpoint_state(reference, 6)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
