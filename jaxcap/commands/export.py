"""Writes a trained model to one file: `jaxcap export WORKDIR FILE` (or `python -m jaxcap`).

The file holds the decoder parameters, its description, the vocabulary, the encoder's name,
image size and resize method, the default decoding and a model card (jaxcap/export.py);
`Captioner.load(FILE)`, `sample.py --model FILE` and `serve.py --model FILE` read it without
the workdir.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from jaxcap import cli  # no JAX: --help stays instant


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  p.add_argument("workdir", help="a training workdir")
  p.add_argument("file", help="the model file to write (e.g. shapes.jaxcap)")
  cli.add_checkpoint_flag(p)
  p.add_argument("--cache_dir", default=cli.CACHE_DIR, help=cli.CACHE_HELP)
  args = p.parse_args(argv)
  if not os.path.isdir(args.workdir):
    p.error(f"{args.workdir}: not a workdir (no such folder)")
  if os.path.isdir(args.file):
    p.error(f"{args.file}: is a folder; give the path of the file to write")
  return args


def main(argv=None) -> int:
  args = parse_args(argv)
  captioner = cli.load_captioner(args.workdir, args.cache_dir, args.checkpoint)
  if captioner is None:
    return 1
  try:
    captioner.save(args.file)
  except OSError as e:
    print(f"error: cannot write {args.file}: {e.strerror or e}", file=sys.stderr)
    return 1
  size = os.path.getsize(args.file)
  print(f"wrote {args.file} ({size / 1e6:.1f} MB): step {captioner.step}, decoding "
        f"{captioner.options.describe()}", file=sys.stderr)
  print(json.dumps(captioner.card, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
