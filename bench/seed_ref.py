"""The seed's own programs, written once for any Keras backend, and a TensorFlow runner.

The main benchmarks run the seed's Keras models on Keras's JAX backend, in-process, as the
brief asks. The seed itself ran on TensorFlow, whose eager calls are several times cheaper
than Keras-on-JAX's, so each comparison also gets a second reference: the same code on
Keras's TensorFlow backend, in a subprocess (a process has one Keras backend), with the same
weights (a `.weights.h5` file) and the same inputs (an `.npz` file). If TensorFlow is not
installed that reference is skipped.

    python bench/seed_ref.py decode WEIGHTS.weights.h5 INPUTS.npz SPEC.json
prints one JSON object with the timings (run with KERAS_BACKEND=tensorflow).

Train steps are timed one at a time instead (`TensorFlowTrainer`): a subprocess holds the
compiled Keras model and runs one `train_on_batch` per request, so the parent can time it in
alternation with its own step and a busy spell of a shared machine hits both alike.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

import numpy as np  # pylint: disable=wrong-import-position

from bench import common  # pylint: disable=wrong-import-position


def seed_decode_loop(keras, encoder_dense, step_model, features, *, max_length: int,
                     start_id: int, end_id: int, top_k: int = 10) -> np.ndarray:
  """The seed's `predict_caption` loop over a batch of encoder features (B, P, D).

  Per token: one eager call of the one-step Keras model, `top_k` (unsorted) then a
  categorical draw over the kept logits, both ids pulled to the host (the seed's `.numpy()`),
  and the next input built from them. Stops once every caption has produced `<end>`. The
  seed also rebuilds the vocabulary list each step to look the word up; that string work is
  left out here, which only flatters the seed.
  """
  ops = keras.ops
  grid = encoder_dense(features)  # the seed's encoder Dense(relu), once per image
  batch = features.shape[0]
  units = grid.shape[-1]
  state = ops.zeros((batch, units))
  dec_input = ops.convert_to_tensor(np.full((batch, 1), start_id, np.int32))
  done = np.zeros(batch, bool)
  out = []
  for _ in range(max_length):
    predictions, state = step_model([dec_input, state, grid])
    top_logits, top_ids = ops.top_k(predictions[:, 0], k=top_k, sorted=False)
    chosen = ops.convert_to_numpy(keras.random.categorical(top_logits, 1))  # (B, 1)
    ids = np.take_along_axis(ops.convert_to_numpy(top_ids), chosen, axis=1)[:, 0]
    out.append(ids)
    done |= ids == end_id
    if done.all():
      break
    dec_input = ops.convert_to_tensor(ids[:, None].astype(np.int32))
  return np.stack(out, 1)


def _build(sizes: dict):
  from tests import seed_keras  # pylint: disable=g-import-not-at-top
  return seed_keras.build_models(**sizes)


# --- the TensorFlow side (runs in the subprocess) -------------------------------------------


def _tf_decode(weights: str, inputs: dict, spec: dict) -> dict:
  import keras  # pylint: disable=g-import-not-at-top
  train_model, step_model = _build(spec["sizes"])
  train_model.load_weights(weights)
  encoder_dense = train_model.get_layer("encoder_dense")
  results = {}
  for case in spec["cases"]:
    features = inputs[case["features"]]
    loop = lambda n, f=features: seed_decode_loop(  # pylint: disable=cell-var-from-loop
        keras, encoder_dense, step_model, f, max_length=n, start_id=spec["start_id"],
        end_id=spec["end_id"])
    loop(2)  # first-call overhead (tracing the layers), as warmup
    results[case["name"]] = common.timeit(lambda: loop(case["max_length"]), case["repeat"],
                                          warmup=0)
  return results


def _tf_train_worker(weights: str, inputs: dict, spec: dict) -> None:
  """Serves `TensorFlowTrainer`: one command a line on stdin, one RESULT line per command.

  "reset": the initial weights and a fresh optimizer; "step CASE": one `train_on_batch` on
  the inputs CASE_tokens, CASE_features, CASE_targets, answering its seconds and loss.
  """
  import keras  # pylint: disable=g-import-not-at-top

  from tests import seed_keras  # pylint: disable=g-import-not-at-top
  train_model, _ = _build(spec["sizes"])
  print("RESULT " + json.dumps({"backend": keras.backend.backend()}), flush=True)
  for line in sys.stdin:
    command = line.split()
    if command == ["reset"]:
      train_model.load_weights(weights)
      train_model.compile(optimizer=seed_keras.seed_optimizer(), loss=seed_keras.seed_loss)
      print("RESULT {}", flush=True)
    elif command and command[0] == "step":
      case = command[1]
      start = time.perf_counter()
      loss = float(np.asarray(train_model.train_on_batch(
          [inputs[f"{case}_tokens"], inputs[f"{case}_features"]], inputs[f"{case}_targets"])))
      print("RESULT " + json.dumps({"seconds": time.perf_counter() - start, "loss": loss}),
            flush=True)


def _main(argv) -> None:
  task, weights, inputs_path, spec_path = argv
  with open(spec_path) as f:
    spec = json.load(f)
  inputs = dict(np.load(inputs_path))
  if task == "train-worker":
    _tf_train_worker(weights, inputs, spec)
    return
  result = _tf_decode(weights, inputs, spec)
  import keras  # pylint: disable=g-import-not-at-top
  result["backend"] = keras.backend.backend()
  print("RESULT " + json.dumps(result))


# --- the parent side ----------------------------------------------------------------------


class Unavailable(Exception):
  """The TensorFlow reference could not run here (the message says why)."""


def tensorflow_available() -> bool:
  import importlib.util  # pylint: disable=g-import-not-at-top
  return importlib.util.find_spec("tensorflow") is not None


def _write_inputs(folder: str, train_model, inputs: dict, spec: dict) -> list[str]:
  """Saves the weights, inputs and spec for a subprocess; returns their paths."""
  paths = [os.path.join(folder, name) for name in ("seed.weights.h5", "inputs.npz", "spec.json")]
  train_model.save_weights(paths[0])
  np.savez(paths[1], **inputs)
  with open(paths[2], "w") as f:
    json.dump(spec, f)
  return paths


TF_ENV = dict(KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")


class TensorFlowTrainer:
  """The seed's Keras model training on Keras's TensorFlow backend in a subprocess.

  `inputs`: {case: (tokens, features, targets)}. `reset()` goes back to the initial weights
  with a fresh optimizer; `step(case)` runs one `train_on_batch` and returns its loss (the
  subprocess's seconds are in `last_seconds`). Raises `Unavailable` where TensorFlow is
  missing or fails.
  """

  def __init__(self, train_model, inputs: dict, sizes: dict):
    if not tensorflow_available():
      raise Unavailable("TensorFlow is not installed")
    self._tmp = tempfile.TemporaryDirectory()
    arrays = {f"{case}_{name}": a for case, values in inputs.items()
              for name, a in zip(("tokens", "features", "targets"), values)}
    paths = _write_inputs(self._tmp.name, train_model, arrays, {"sizes": sizes})
    self._proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "train-worker"] + paths,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env=dict(os.environ, **TF_ENV))
    if self._request(None).get("backend") != "tensorflow":
      self.close()
      raise Unavailable("Keras did not run on TensorFlow")
    self.last_seconds = None

  def _request(self, command: str | None) -> dict:
    if command is not None:
      self._proc.stdin.write(command + "\n")
      self._proc.stdin.flush()
    for line in self._proc.stdout:
      if line.startswith("RESULT "):
        return json.loads(line[len("RESULT "):])
    raise Unavailable(f"the TensorFlow worker exited ({self._proc.wait()})")

  def reset(self) -> None:
    self._request("reset")

  def step(self, case: str) -> float:
    result = self._request(f"step {case}")
    self.last_seconds = result["seconds"]
    return result["loss"]

  def close(self) -> None:
    if self._proc.poll() is None:
      self._proc.stdin.close()
      self._proc.wait(timeout=60)
    self._tmp.cleanup()


def run_tensorflow(task: str, train_model, inputs: dict, spec: dict,
                   timeout: float = 900) -> dict:
  """Runs `task` ('decode') on Keras's TensorFlow backend with `train_model`'s weights;
  returns the subprocess's result dict or raises `Unavailable`."""
  if not tensorflow_available():
    raise Unavailable("TensorFlow is not installed")
  with tempfile.TemporaryDirectory() as tmp:
    paths = _write_inputs(tmp, train_model, inputs, spec)
    try:
      proc = subprocess.run(
          [sys.executable, os.path.abspath(__file__), task] + paths,
          capture_output=True, text=True, env=dict(os.environ, **TF_ENV), timeout=timeout,
          check=False)
    except subprocess.TimeoutExpired as e:
      raise Unavailable(f"the TensorFlow run took over {timeout:.0f} s") from e
  lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
  if proc.returncode or not lines:
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    raise Unavailable(f"the TensorFlow run failed: {tail[0][:200]}")
  result = json.loads(lines[-1][len("RESULT "):])
  if result.get("backend") != "tensorflow":
    raise Unavailable(f"Keras ran on {result.get('backend')!r}, not TensorFlow")
  return result


if __name__ == "__main__":
  _main(sys.argv[1:])
