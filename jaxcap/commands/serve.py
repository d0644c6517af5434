"""Serves a trained captioner over HTTP: `python serve.py --workdir W`, then open the page.

  GET  /          a page: drop images, see captions and each word's attention
  POST /caption   multipart field `image` (one or more files) or the raw image as the body;
                  decoding options as form fields or query parameters
  GET  /health    200 once the model is loaded and compiled

Concurrent requests are batched into one compiled call (see jaxcap/serving/app.py).
"""

from __future__ import annotations

import argparse
import os
import sys

from jaxcap import cli

DEFAULT_WORKDIR = os.path.join("workdirs", "quickstart")  # where `make demo` trains


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  p.add_argument("--workdir", default=DEFAULT_WORKDIR, help="training workdir to load")
  cli.add_checkpoint_flag(p)
  p.add_argument("--host", default="127.0.0.1",
                 help="address to listen on (0.0.0.0 lets other machines in)")
  p.add_argument("--port", type=int, default=8000, help="port to listen on")
  p.add_argument("--max_upload_mb", type=float, default=20,
                 help="larger requests get 413 before they are read")
  p.add_argument("--batch_sizes", default="1,4,8,16,32",
                 help="batch sizes compiled at start-up; the largest caps one call")
  p.add_argument("--max_wait_ms", type=float, default=5.0,
                 help="how long an image waits for others to share its call (only while "
                      "other requests are still uploading)")
  p.add_argument("--encode_chunk", type=int, default=None,
                 help="images per encoder pass within a batch; None: 4 on a CPU (bigger "
                      "encoder batches cost more per image there), the whole batch elsewhere")
  p.add_argument("--cache_dir", default=cli.CACHE_DIR, help=cli.CACHE_HELP)
  args = p.parse_args(argv)
  try:
    args.batch_sizes = sorted({int(s) for s in args.batch_sizes.split(",")})
  except ValueError:
    p.error(f"--batch_sizes: comma-separated integers, not {args.batch_sizes!r}")
  if args.batch_sizes[0] < 1:
    p.error("--batch_sizes must be >= 1")
  if args.max_upload_mb <= 0:
    p.error("--max_upload_mb must be > 0")
  if args.encode_chunk is not None and args.encode_chunk < 0:
    p.error("--encode_chunk must be >= 0 (0: the whole batch)")
  if args.max_wait_ms < 0:
    p.error("--max_wait_ms must be >= 0")
  return args


def main(argv=None) -> int:
  args = parse_args(argv)
  captioner = cli.load_captioner(args.workdir, args.cache_dir, args.checkpoint)
  if captioner is None:
    return 1
  import uvicorn  # pylint: disable=g-import-not-at-top

  from jaxcap.serving import app as serve  # pylint: disable=g-import-not-at-top
  print(f"loaded {args.workdir} (step {captioner.step}); compiling batch sizes "
        f"{args.batch_sizes}, then serving http://{args.host}:{args.port}/", flush=True)
  app = serve.make_app(captioner, batch_sizes=args.batch_sizes, max_wait_ms=args.max_wait_ms,
                       max_upload_mb=args.max_upload_mb, encode_chunk=args.encode_chunk)
  uvicorn.run(app, host=args.host, port=args.port, log_level="info", access_log=False)
  return 0


if __name__ == "__main__":
  sys.exit(main())
