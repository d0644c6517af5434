"""Trains a captioner: `python train.py --config configs/quickstart.py --workdir DIR`.

Any config field can be overridden, e.g. `--config.train.num_steps=200`. Re-running the same
command resumes from the latest readable checkpoint in `--workdir` (a larger num_steps
extends the run); one run at a time per workdir.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from jaxcap.data import disk
from jaxcap.training import checkpoints, config_checks, workdir
from jaxcap.training import loop as trainer

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


def _unknown_override(argv, error: Exception) -> str:
  """One line for an override of a field the config does not have."""
  # ml_collections raises AttributeError(KeyError("'name'\nDid you mean ...")) for `name`.
  cause = error.args[0] if error.args and isinstance(error.args[0], KeyError) else error
  lines = str(cause.args[0] if cause.args else cause).strip("\"").split("\n")
  name = lines[0].strip("'")
  overrides = [a for a in argv if a.startswith("--config.")
               and name in a[len("--config."):].split("=", 1)[0].split(".")]
  return (f"{overrides[0] if overrides else f'--config.{name}'}: the config has no such "
          "field" + "".join(f"; {line}" for line in lines[1:]))


def parse_flags(argv):
  """absl's flag parsing, with a missing config file or an unknown override as one line."""
  try:
    rest = FLAGS(argv)
  except flags.Error as e:
    print(f"FATAL Flags parsing error: {e}\nPass --helpshort or --helpfull to see help on "
          "flags.", file=sys.stderr)
    sys.exit(1)
  except (AttributeError, KeyError) as e:  # ml_collections: an override of no field
    raise SystemExit(f"error: {_unknown_override(argv, e)}") from None
  try:
    FLAGS.config.get("seed")  # the file is loaded lazily; a failure shows on first use
  except OSError as e:
    path = FLAGS["config"].config_filename
    if not os.path.isfile(path):
      raise SystemExit(f"error: config file not found: {path}") from None
    raise
  return rest


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


def run(argv):
  """absl's main: trains by FLAGS."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)  # jaxcap's warnings: skipped images, ...
  # ... but not orbax's: its notes on every save would break up the progress bar, and a
  # failed save logs one traceback per background thread before the error reaches us
  # (and is reported once, below).
  logging.get_absl_logger().addFilter(lambda record: "orbax" not in record.pathname)
  checkpoints.ignore_closed_loop_callbacks()
  try:
    config_checks.validate(FLAGS.config)  # before anything waits on other processes
    init_distributed()
    metrics = trainer.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except workdir.WorkdirBusyError as e:  # another run in this workdir: one line
    raise SystemExit(f"error: {e}") from None
  except (OSError, ValueError) as e:
    if disk.is_full(e):  # orbax's arrives as a ValueError from TensorStore
      raise SystemExit(f"error: {disk.describe(e)}") from None
    if isinstance(e, OSError) and not isinstance(e, FileNotFoundError):
      raise
    # Bad data or config (a missing file, a malformed line, too few examples): one line.
    raise SystemExit(f"error: {e}") from None
  print("final:", " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))


def main(argv=None):
  """`jaxcap train ARGS` (argv: ARGS) or train.py (argv None: sys.argv); exits."""
  app.run(run, argv=None if argv is None else [sys.argv[0]] + list(argv),
          flags_parser=parse_flags)


if __name__ == "__main__":
  main()
