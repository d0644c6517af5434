"""Trains a captioner: `python train.py --config configs/quickstart.py --workdir DIR`.

Any config field can be overridden, e.g. `--config.train.num_steps=200`. Re-running the same
command resumes from the latest readable checkpoint in `--workdir` (a larger num_steps
extends the run); one run at a time per workdir. Ctrl-C (or SIGTERM) finishes the current
step and saves a checkpoint there; a second Ctrl-C aborts at once.
"""

import importlib.util
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

# jaxcap.training is imported in main and help: JAX takes seconds to import.
# The repository's configs/ (jaxcap/commands/ is two levels below it).
DEFAULT_CONFIG = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs",
    "quickstart.py")
HELP = ("-h", "-help", "--help", "--helpshort", "--helpfull", "-?")

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


def print_help(argv) -> None:
  """The flags, then every config field (of --config's file, else the quickstart's) with its
  default and allowed range."""
  from jaxcap.training import config_help  # pylint: disable=g-import-not-at-top
  path = DEFAULT_CONFIG
  for i, arg in enumerate(argv[1:], 1):
    if arg in ("--config", "-config") and i + 1 < len(argv):
      path = argv[i + 1]
    elif arg.startswith(("--config=", "-config=")):
      path = arg.split("=", 1)[1]
  file, *arg = path.split(":", 1)
  if not os.path.isfile(file):
    raise SystemExit(f"error: config file not found: {file}")
  spec = importlib.util.spec_from_file_location("help_config", file)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(*arg)
  flag_help = FLAGS.get_help() if "--helpfull" in argv else FLAGS.main_module_help()
  usage = ("usage: train.py --config FILE --workdir DIR [--config.FIELD=VALUE ...] "
           "(or: jaxcap train ...)")
  try:
    print(f"{usage}\n\n{__doc__.strip()}\n\nflags:\n{flag_help}\n\n"
          f"{config_help.describe(config, path)}", flush=True)
  except BrokenPipeError:  # `train.py --help | head`: the reader has what it wanted
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def parse_flags(argv):
  """absl's flag parsing, with a missing config file or an unknown override as one line;
  --help lists the config's fields and exits 0."""
  if any(arg in HELP for arg in argv[1:]):
    print_help(argv)
    sys.exit(0)
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
  except OSError:
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
  # pylint: disable=g-import-not-at-top
  from jaxcap.data import disk
  from jaxcap.training import checkpoints, config_checks, workdir
  from jaxcap.training import loop as trainer
  # pylint: enable=g-import-not-at-top
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
  try:
    app.run(run, argv=None if argv is None else [sys.argv[0]] + list(argv),
            flags_parser=parse_flags)
  except KeyboardInterrupt as e:
    # Ctrl-C or SIGTERM in training (jaxcap.training.stopping.Interrupted, which says what was
    # saved), or a Ctrl-C before its handler was set: one line, the shell's exit code.
    print(f"\n{e or 'interrupted before training began; nothing to save'}", file=sys.stderr)
    sys.exit(getattr(e, "exit_code", 130))


if __name__ == "__main__":
  main()
