"""Training: everything `train.py` runs.

    steps.py          the loss, the optimizer and the compiled data-parallel train/eval steps
    loop.py           the loop: resume, steps, validation, checkpoints, logs
    scst.py           self-critical sequence training (the CIDEr-D reward and its phase)
    checkpoints.py    orbax checkpoints of params and optimizer state, with their meta
    workdir.py        the one-writer lock on a workdir
    logs.py           metrics.jsonl and TensorBoard
    config_checks.py  every config field checked before any work
    faults.py         named points where tests inject crashes

The train step's names are re-exported here: `from jaxcap import training;
training.make_train_step(...)`.
"""

from jaxcap.training.steps import (  # noqa: F401
    AXIS, COMPUTE_DTYPES, LENGTH_MULTIPLE, LR_SCHEDULES, PackedStep, TrainState, init_state,
    keras_adam, learning_rate_schedule, loss, loss_terms, make_eval_step, make_optimizer,
    make_train_step, pack_batch, packed_size, replicate, shard, shift_targets, unreplicate)
