"""The seed's own programs, written once for any Keras backend, and a TensorFlow runner.

The main benchmarks run the seed's Keras models on Keras's JAX backend, in-process, as the
brief asks. The seed itself ran on TensorFlow, whose eager calls are several times cheaper
than Keras-on-JAX's, so each comparison also gets a second reference: the same code on
Keras's TensorFlow backend, in a subprocess (a process has one Keras backend), with the same
weights (a `.weights.h5` file) and the same inputs (an `.npz` file). If TensorFlow is not
installed that reference is skipped.

    python bench/seed_ref.py decode|train WEIGHTS.weights.h5 INPUTS.npz SPEC.json
prints one JSON object with the timings (run with KERAS_BACKEND=tensorflow).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

import numpy as np  # pylint: disable=wrong-import-position


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


def median_seconds(fn, repeat: int, warmup: int = 1) -> float:
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeat):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


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
    results[case["name"]] = median_seconds(lambda: loop(case["max_length"]), case["repeat"],
                                           warmup=0)
  return results


def _tf_train(weights: str, inputs: dict, spec: dict) -> dict:
  from tests import seed_keras  # pylint: disable=g-import-not-at-top
  train_model, _ = _build(spec["sizes"])
  train_model.load_weights(weights)
  train_model.compile(optimizer=seed_keras.seed_optimizer(), loss=seed_keras.seed_loss)
  x = [inputs["tokens"], inputs["features"]]
  first_loss = float(np.asarray(train_model.train_on_batch(x, inputs["targets"])))
  seconds = median_seconds(lambda: train_model.train_on_batch(x, inputs["targets"]),
                           spec["repeat"], warmup=1)
  return {"seconds": seconds, "first_loss": first_loss}


def _main(argv) -> None:
  task, weights, inputs_path, spec_path = argv
  with open(spec_path) as f:
    spec = json.load(f)
  inputs = dict(np.load(inputs_path))
  result = {"decode": _tf_decode, "train": _tf_train}[task](weights, inputs, spec)
  import keras  # pylint: disable=g-import-not-at-top
  result["backend"] = keras.backend.backend()
  print("RESULT " + json.dumps(result))


# --- the parent side ----------------------------------------------------------------------


class Unavailable(Exception):
  """The TensorFlow reference could not run here (the message says why)."""


def tensorflow_available() -> bool:
  import importlib.util  # pylint: disable=g-import-not-at-top
  return importlib.util.find_spec("tensorflow") is not None


def run_tensorflow(task: str, train_model, inputs: dict, spec: dict,
                   timeout: float = 900) -> dict:
  """Runs `task` ('decode' or 'train') on Keras's TensorFlow backend with `train_model`'s
  weights; returns the subprocess's result dict or raises `Unavailable`."""
  if not tensorflow_available():
    raise Unavailable("TensorFlow is not installed")
  with tempfile.TemporaryDirectory() as tmp:
    weights = os.path.join(tmp, "seed.weights.h5")
    train_model.save_weights(weights)
    np.savez(os.path.join(tmp, "inputs.npz"), **inputs)
    with open(os.path.join(tmp, "spec.json"), "w") as f:
      json.dump(spec, f)
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    try:
      proc = subprocess.run(
          [sys.executable, os.path.abspath(__file__), task, weights,
           os.path.join(tmp, "inputs.npz"), os.path.join(tmp, "spec.json")],
          capture_output=True, text=True, env=env, timeout=timeout, check=False)
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
