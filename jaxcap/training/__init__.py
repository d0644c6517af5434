"""Training: everything `train.py` runs.

    steps.py          the loss, the optimizer, the one train-step builder and the eval step
    parallel.py       the device mesh: replicated state, batches split over the devices
    loop.py           the loop: resume, steps, validation, checkpoints, logs
    scst.py           self-critical sequence training: the phase that samples and updates
    policy_loss.py    its loss: baselines, advantages, the policy-gradient loss function
    cider_reward.py   its reward: CIDEr-D in numpy against the training references
    checkpoints.py    orbax checkpoints of params and optimizer state, with their meta
    workdir.py        the one-writer lock on a workdir
    logs.py           metrics.jsonl and TensorBoard
    config_checks.py  every config field checked before any work
    faults.py         named points where tests inject crashes

The train step's names are re-exported here: `from jaxcap import training;
training.make_train_step(...)`.
"""

from jaxcap.training.parallel import AXIS, data_mesh  # noqa: F401
from jaxcap.training.steps import (  # noqa: F401
    COMPUTE_DTYPES, LENGTH_MULTIPLE, Ema, LR_SCHEDULES, LossFn, PackedStep, TrainState, TrainStep,
    cross_entropy, init_state, init_train_state, keras_adam, learning_rate_schedule, loss,
    loss_terms, make_eval_step, make_optimizer, make_step, make_train_step, pack_batch,
    packed_size, shift_targets)
