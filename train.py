"""Trains a captioner: `python train.py --config configs/quickstart.py --workdir DIR`.

Any config field can be overridden, e.g. `--config.train.num_steps=200`. Re-running the same
command resumes from the latest checkpoint in `--workdir`.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from jaxcap import checkpoints, trainer

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Where checkpoints, logs and the vocabulary go.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)  # keep orbax's per-save notes out of the progress bar
  try:
    metrics = trainer.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except (checkpoints.CheckpointMismatchError, FileNotFoundError) as e:
    raise SystemExit(f"error: {e}") from None
  print("final:", " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))


if __name__ == "__main__":
  app.run(main)
