"""The training loop behind `train.py`: resume, steps, validation, checkpoints, logs.

The data it trains on comes from `jaxcap.data.build.build_data`.
"""

from __future__ import annotations

import json
import os
import time

import jax
import ml_collections
import numpy as np
import tqdm

from jaxcap import decoding, training
from jaxcap.data import build, disk, pipeline
from jaxcap.evaluation import captioning, metrics
from jaxcap.evaluation.metrics import CIDER_SCALE
from jaxcap.model import decoders, encoders
from jaxcap.training import checkpoints, config_checks, faults, logs, parallel, scst, stopping
from jaxcap.training import workdir as workdir_lib

LOADER_STATE = "loader_state"  # checkpoint meta: the training batches' Grain iterator state


def validate(params, spec, data: pipeline.CaptionSet, vocab, config) -> dict:
  """Greedy captions for `train.eval_examples` val images (`pipeline.validation_rows`: the
  first images of each shard): BLEU-4, CIDEr and the exact-match rate (a caption equal to one
  of the image's references). Each process captions its own shards' images; every process
  then scores all the captions."""
  per_shard = pipeline.validation_rows(data, config.train.eval_examples)
  mine = np.concatenate([per_shard[k] for k in data.local])
  tokens = decoding.caption_features(
      params, spec, data.features_of(mine), decoding.DecodeOptions("greedy"),
      start_id=vocab.start_id, end_id=vocab.end_id, max_length=config.model.max_length)
  shares = len(data.local)
  counts = [sum(len(r) for r in per_shard[p * shares:(p + 1) * shares])
            for p in range(data.processes)]
  tokens = parallel.gather_rows(tokens.astype(np.int32), counts)
  candidates = [vocab.to_text(row) for row in tokens]
  references = [data.references[r] for r in np.concatenate(per_shard)]
  scores = metrics.score(dict(enumerate(references)), dict(enumerate(candidates)),
                         use_java=False, which=metrics.TRAINING)
  return {"val_bleu4": scores["Bleu_4"], "val_cider": scores["CIDEr"],
          "val_exact_match": captioning.exact_match(candidates, references)}


def evaluate_loss(eval_step, params, data, batch_size, buckets=()) -> float:
  total = count = 0.0
  for feats, tokens in pipeline.eval_batches(data, batch_size, buckets):
    s, c = eval_step(params, feats, tokens)
    total += float(s)
    count += float(c)
  return total / max(count, 1.0)


def resume(workdir: str, ckpt: checkpoints.Checkpoints, best: checkpoints.Checkpoints,
           state: training.TrainState, check_meta) -> tuple[training.TrainState, float]:
  """(state, best validation CIDEr so far) to continue from: the newest readable checkpoint
  (`state` itself if none), after `check_meta(meta)` accepts it.

  Any interleaving of kills leaves a workdir this resumes: damaged checkpoints are moved
  aside (`Checkpoints.newest_readable`), and what a killed run wrote after its last checkpoint
  (a best/ step here; metrics rows and TensorBoard events: `logs.Writer`) is dropped, so the
  workdir holds one history up to the step resumed from, and the rerun writes those steps
  afresh, under its own config.
  """
  def restore(step):
    check_meta(ckpt.restore_meta(step))
    params, opt_state = ckpt.restore_training(step, state.params, state.opt_state)
    ema = state.ema
    if ema is not None:  # a checkpoint saved without an average starts one from its params
      saved = ckpt.restore_ema(step, ema.params)
      ema = ema.replace(params=saved if saved is not None else jax.tree.map(np.copy, params))
    return state.replace(step=np.asarray(step, np.int32), params=params, opt_state=opt_state,
                         ema=ema)

  step, restored = ckpt.newest_readable(restore, set_aside=True)
  if restored is None and ckpt.steps():
    raise checkpoints.UnreadableCheckpointError(
        f"no checkpoint in {ckpt.directory} can be read (see the warnings above); to start "
        "afresh, move that folder away")
  step = step or 0
  if restored is not None:
    state = restored
    print(f"resumed from step {step} in {ckpt.directory}")
  for later in [s for s in best.steps() if s > step]:
    best.delete(later)
    print(f"dropped {best.step_dir(later)}: newer than step {step}, the checkpoint this run "
          "resumes from")
  _, best_meta = best.newest_readable(
      lambda s: (best.restore_params(s), best.restore_meta(s))[1], set_aside=True)
  if best_meta is None:
    for damaged in best.steps():  # restored without a template: unreadable means damaged
      print(f"moved {best.step_dir(damaged)} to {best.set_aside(damaged)}; the next "
            "validation saves a new best")
  return state, (best_meta.get("val_cider", -1.0) if best_meta else -1.0)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains (or resumes) in `workdir`; returns the last logged metrics.

  SIGINT (Ctrl-C) or SIGTERM finishes the current step, saves a checkpoint at it and raises
  stopping.Interrupted; a second one raises it at once. Raises workdir.WorkdirError if the
  workdir cannot be written, workdir.WorkdirBusyError if another run holds its lock.
  """
  config_checks.validate(config)  # every bad value at once, before any work
  workdir_lib.prepare(workdir)
  # One trainer per workdir: a second one would clear the first's checkpoint in flight
  # (orbax's start-up cleanup) and interleave the logs. Process 0 holds it for a multi-host run.
  lock = workdir_lib.Lock(workdir) if jax.process_index() == 0 else None
  try:
    if lock and lock.previous:
      print(f"note: the last run here (pid {lock.previous['pid']} on {lock.previous['host']}, "
            f"started {lock.previous['started']}) did not finish cleanly")
    with stopping.Signals() as signals:
      return _train_and_evaluate(config, workdir, signals)
  finally:
    if lock:
      lock.release()


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                        signals: stopping.Signals) -> dict:
  encoder, _, feature_fn = encoders.load(config.encoder)
  vocab, sets = build.build_data(config, feature_fn, workdir)
  if jax.process_index() == 0:
    print(pipeline.summary(sets, vocab, config.model.max_length))
  train_set, val_set = sets["train"], sets.get("val")  # None: no validation, no best/ copy
  spec = decoders.spec_from_config(config.model, vocab_size=len(vocab),
                                   feature_dim=encoder.FEATURE_DIM,
                                   positions=train_set.features.shape[1])

  ckpt = checkpoints.Checkpoints(workdir, max_to_keep=config.train.keep_checkpoints)
  best = checkpoints.Checkpoints(workdir, max_to_keep=1, kind=checkpoints.BEST)
  meta = checkpoints.make_meta(config.to_dict(), spec, vocab, encoder.NAME)
  optimizer = training.make_optimizer(config)
  # With train.ema_decay, the parameters' moving average is what validation, best/ and every
  # reader of the checkpoints (sample, evaluate, export, serve) use.
  state = training.init_state(decoders.init(jax.random.key(config.seed), spec), optimizer,
                              config.train.get("ema_decay", 0.0))
  resumed = {}  # the meta of the checkpoint resumed from (the last one checked)

  def check_meta(saved):
    checkpoints.check_compatible(saved, spec=spec, vocab=vocab, encoder=encoder.NAME,
                                 where=workdir)
    resumed.clear()
    resumed.update(saved)

  state, best_cider = resume(workdir, ckpt, best, state, check_meta)
  primary = jax.process_index() == 0  # the one process that writes logs
  if primary:
    with disk.writing(workdir, "the vocabulary and config"):
      vocab.save(os.path.join(workdir, "vocab.json"))
      with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump(config.to_dict(), f, indent=2)

  dtype = training.COMPUTE_DTYPES[config.train.compute_dtype]
  mesh = parallel.data_mesh()  # every device of every process
  train_step = training.make_train_step(optimizer, spec, dtype, dropout_seed=config.seed,
                                        mesh=mesh,
                                        label_smoothing=config.train.get("label_smoothing", 0.0))
  eval_step = training.make_eval_step(spec, dtype, mesh)
  start = int(state.step)
  ce_steps = config.train.num_steps
  # Self-critical steps (train.scst_steps) follow the cross-entropy ones in the same loop.
  num_steps = ce_steps + scst.Settings.from_config(config.train).steps
  phase = (scst.Phase(config, train_set, vocab, spec, jax.random.key(config.seed),
                      compute_dtype=dtype, mesh=mesh)
           if num_steps > max(start, ce_steps) else None)
  # Grain streams this process's part of each batch; its state is in every checkpoint (the
  # same in every process: the batches are a function of the step).
  batches = pipeline.TrainBatches(train_set, config.train.batch_size, config.seed,
                                  config.train.length_buckets).iterator(
      ce_steps, resumed.get(LOADER_STATE, {"next_index": min(start, ce_steps)}))
  state = parallel.put_replicated(state, mesh)
  writer = logs.Writer(workdir, config.to_dict(), start, enabled=primary)
  last = {"step": start}
  if start >= num_steps:
    print(f"already trained to step {start} (train.num_steps + train.scst_steps = "
          f"{num_steps}); nothing to do")
  bar = tqdm.tqdm(total=num_steps, initial=start, desc="training", unit="step",
                  dynamic_ncols=True, disable=not primary)
  window_start, window_losses = time.perf_counter(), []
  shown = {}  # on the bar: the latest value of each metric
  signals.deferring = True  # a signal now stops the loop between steps (below)
  try:
    for step in range(start, num_steps):
      if step < ce_steps:
        feats, tokens = next(batches)
        state, metrics = train_step(state, feats, tokens)
      else:
        state, metrics = phase.step(state, step)
      loss = metrics["loss"]
      if window_losses:
        # One step in flight at most: a long queue of un-awaited collectives can deadlock
        # CPU devices, and the host gains nothing from running further ahead.
        window_losses[-1].block_until_ready()
      window_losses.append(loss)
      bar.update(1)
      done = step + 1
      row = {}  # this step's metrics: training ones every log_every, validation eval_every
      if done % config.train.log_every == 0 or done == num_steps:
        train_loss = float(np.mean([float(l) for l in window_losses]))
        elapsed = time.perf_counter() - window_start
        row = {"train_loss": train_loss,
               # what the last step used (inject_hyperparams keeps it in the state)
               "learning_rate": float(state.opt_state.hyperparams["learning_rate"]),
               "steps_per_sec": len(window_losses) / elapsed,
               **(phase.pop_scalars() if phase else {})}
        window_start, window_losses = time.perf_counter(), []
      if val_set is not None and (done % config.train.eval_every == 0 or done == num_steps):
        row["val_loss"] = evaluate_loss(eval_step, state.eval_params, val_set,
                                        config.train.batch_size, config.train.length_buckets)
        row.update(validate(parallel.local_copy(state.eval_params), spec, val_set, vocab,
                            config))
        if row["val_cider"] > best_cider:
          best_cider = row["val_cider"]
          best.save(done, dict(meta, val_cider=best_cider),
                    params=jax.device_get(state.eval_params))
          # Committed before anything else of this step is written, so that a crash leaves
          # one of a few known states (see `resume`), not a race between two saves.
          best.wait()
      if row:
        last = {"step": done, **row}
        shown.update(row)
        # 3 significant digits, in scientific notation where needed: 3e-05, not 0.
        bar.set_postfix({k: f"{v * (CIDER_SCALE if k == 'val_cider' else 1):.3g}"
                         for k, v in shown.items()})
        with disk.writing(workdir, "the metrics log"):
          writer.write(done, row)
        faults.point(f"metrics.after_write:{done}")
      # A signal stops the run here, with a checkpoint at the step reached (so metrics.jsonl
      # holds no row that the resumed run will write again).
      if (done % config.train.checkpoint_every == 0 or done == num_steps
          or signals.signum is not None):
        host = jax.device_get(state)  # replicated: every process holds all of it
        ckpt.save(done, dict(meta, **{LOADER_STATE: batches.get_state()}), params=host.params,
                  opt_state=host.opt_state,
                  ema_params=host.eval_params if host.ema is not None else None)
      if signals.signum is not None and done < num_steps:
        raise stopping.Interrupted(signals.signum, done)
  finally:
    bar.close()
    writer.close()
    for manager in (ckpt, best):
      manager.wait()
      manager.close()
  return last
