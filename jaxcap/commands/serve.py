"""Serves a trained captioner over HTTP: `serve.py --workdir W` or `--model FILE`, then open /.

  GET  /          a page: drop images, see captions and each word's attention
  POST /caption   multipart field `image` (one or more files) or the raw image as the body;
                  decoding options as form fields or query parameters
  GET  /health    200 once the model is loaded and compiled
  GET  /info      the model: a one-line summary, step, decoder, vocabulary size

Requests decode greedily (the model's default decoding, said on stderr) unless their fields
ask otherwise. Concurrent requests are batched into one compiled call (see
jaxcap/serving/app.py). Only requests naming this server as their Host, from its own page or
from no page, are answered (see --allow_host, --allow_origin).
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys

from jaxcap import cli, ranges

PILLOW_PIXEL_LIMIT = 89_478_485  # PIL.Image.MAX_IMAGE_PIXELS, its decompression-bomb warning
# Compiling batch 100000 needed over 22 GB; 32 already keeps a CPU busy and 256 an H100.
MAX_BATCH = 256
FLAG_RANGES = {
    "port": ranges.integer(0, 65535),
    "max_upload_mb": ranges.number(0, 4096, low_open=True),
    "max_wait_ms": ranges.number(0, 1000),
    "encode_chunk": ranges.integer(0, MAX_BATCH),
    "max_pixels": ranges.integer(1, PILLOW_PIXEL_LIMIT),
    "max_decoding": ranges.integer(1, 64),
}


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  p.add_argument("--workdir", default=cli.DEFAULT_WORKDIR, help="training workdir to load")
  cli.add_model_flags(p)
  p.add_argument("--host", default="127.0.0.1",
                 help="address to listen on (0.0.0.0 lets other machines in)")
  p.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free one)")
  p.add_argument("--allow_host", action="append", default=[], metavar="NAME",
                 help="another name clients may use for this server in their Host header "
                      "(repeatable; '*': any); by default the listen address and localhost")
  p.add_argument("--allow_origin", action="append", default=[], metavar="ORIGIN",
                 help="another site (e.g. https://example.org) whose pages may call this "
                      "server (repeatable; '*': any); by default only its own page")
  p.add_argument("--max_upload_mb", type=float, default=20,
                 help="larger requests get 413 before they are read")
  p.add_argument("--max_pixels", type=int, default=16_000_000,
                 help="pixels an image may decode to: larger JPEGs decode at 1/2-1/8 "
                      "scale, other larger images get 413 before decoding")
  p.add_argument("--max_decoding", type=int, default=2,
                 help="images decoded at once (each up to ~16 bytes per pixel)")
  p.add_argument("--batch_sizes", default="1,4,8,16,32",
                 help=f"batch sizes compiled at start-up (each 1 to {MAX_BATCH}); the largest "
                      "caps one call")
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
    p.error(f"--batch_sizes: comma-separated integers, not {args.batch_sizes[:40]!r}")
  if not 1 <= args.batch_sizes[0] <= args.batch_sizes[-1] <= MAX_BATCH or len(
      args.batch_sizes) > 8:
    p.error(f"--batch_sizes: at most 8 sizes, each from 1 to {MAX_BATCH} (every size is "
            f"compiled; batch 100000 needed over 22 GB), not "
            f"{','.join(map(str, args.batch_sizes))[:60]}")
  for name, (allowed, ok) in FLAG_RANGES.items():
    value = getattr(args, name)
    if value is not None and not ok(value):
      p.error(f"--{name} {value}: must be {allowed}")
  return args


def listen(host: str, port: int) -> socket.socket:
  """A listening socket on host:port (port 0: a free one); OSError if it cannot be had."""
  family = socket.AF_INET6 if ":" in host else socket.AF_INET
  return socket.create_server((host, port), family=family)


def quiet_logs() -> None:
  """Access lines on stderr; uvicorn's own per-request warnings rate-limited like them."""
  from jaxcap.serving import app as serve  # pylint: disable=g-import-not-at-top
  handler = logging.StreamHandler(sys.stderr)
  handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
  serve.LOG.addHandler(handler)
  serve.LOG.setLevel(logging.INFO)
  serve.LOG.propagate = False
  limit = serve.RateLimit()
  for name in ("uvicorn.error", "uvicorn.protocols.http"):
    logging.getLogger(name).addFilter(limit)


def main(argv=None) -> int:
  args = parse_args(argv)
  try:
    sock = listen(args.host, args.port)
  except OSError as e:
    print(f"error: cannot listen on {args.host}:{args.port}: {e.strerror or e}",
          file=sys.stderr)
    return 1
  port = sock.getsockname()[1]
  source = args.model or args.workdir
  captioner = cli.load_captioner(source, args.cache_dir, args.checkpoint)
  if captioner is None:
    return 1
  print(f"decoding: {captioner.options.describe()} (a request's fields may ask for another)",
        file=sys.stderr)
  import uvicorn  # pylint: disable=g-import-not-at-top

  from jaxcap.serving import app as serve  # pylint: disable=g-import-not-at-top
  shown = f"[{args.host}]" if ":" in args.host else args.host
  print(f"loaded {source} (step {captioner.step}); compiling batch sizes "
        f"{args.batch_sizes}, then serving http://{shown}:{port}/", flush=True)
  app = serve.make_app(captioner, batch_sizes=args.batch_sizes, max_wait_ms=args.max_wait_ms,
                       max_upload_mb=args.max_upload_mb, max_pixels=args.max_pixels,
                       max_decoding=args.max_decoding, encode_chunk=args.encode_chunk,
                       host=args.host, port=port, allow_hosts=args.allow_host,
                       allow_origins=args.allow_origin)
  server = uvicorn.Server(uvicorn.Config(app, log_level="info", access_log=False))
  quiet_logs()  # after uvicorn's Config, which sets up its loggers
  server.run(sockets=[sock])
  return 0


if __name__ == "__main__":
  sys.exit(main())
