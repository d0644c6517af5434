"""Trains a captioner: `python train.py --config configs/quickstart.py --workdir DIR`.

Any config field can be overridden, e.g. `--config.train.num_steps=200`. Re-running the same
command resumes from the latest readable checkpoint in `--workdir` (a larger num_steps
extends the run); one run at a time per workdir.
"""

import logging as std_logging

from absl import app, flags, logging
from ml_collections import config_flags

from jaxcap import checkpoints, trainer, workdir

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Where checkpoints, logs and the vocabulary go.")
flags.DEFINE_bool("distributed", False,
                  "Join a multi-host run through jax.distributed.initialize(). On a TPU pod "
                  "slice or under SLURM the other settings are found automatically.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-host).")
flags.mark_flags_as_required(["config", "workdir"])


def init_distributed():
  """Starts JAX's distributed runtime when asked; every process then runs this same script
  and reads only its share of each batch."""
  import jax  # pylint: disable=g-import-not-at-top
  if not (FLAGS.distributed or FLAGS.coordinator_address):
    return
  # Cross-process collectives between CPU devices need gloo; GPUs and TPUs ignore this.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                             num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)  # jaxcap's warnings: skipped images, ...
  # ... but not orbax's notes on every save, which would break up the progress bar.
  logging.get_absl_logger().addFilter(
      lambda record: record.levelno >= std_logging.ERROR or "orbax" not in record.pathname)
  init_distributed()
  try:
    metrics = trainer.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except (checkpoints.CheckpointMismatchError, FileNotFoundError, ValueError,
          workdir.WorkdirBusyError) as e:
    # Bad data or config (a missing file, a malformed line, too few examples), or another
    # run in this workdir: one line.
    raise SystemExit(f"error: {e}") from None
  print("final:", " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))


if __name__ == "__main__":
  app.run(main)
