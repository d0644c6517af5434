"""Captions over HTTP: a Starlette app around a `Captioner`, with concurrent requests batched.

  make_app(captioner)   GET / (the page), POST /caption, GET /health, GET /info
  Batcher               images submitted within a few ms of each other -> one compiled call

Every model call goes through the one `Captioner` (`Captioner.caption_batch` on the model
thread, `Captioner.warm_up` at start-up); this module speaks HTTP only.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import ipaddress
import logging
import math
import os
import re
import socket
import threading
import time
from typing import Callable, Sequence

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from python_multipart.multipart import parse_options_header
from starlette.datastructures import Headers, UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from jaxcap.data import image_files
from jaxcap.decoding.options import DecodeOptions

BATCH_SIZES = (1, 4, 8, 16, 32)  # compiled at start-up; a batch is padded up to one of them
MAX_WAIT_MS = 5.0  # how long the first image of a batch waits for company
MAX_IMAGES_PER_REQUEST = 64
# Pixels an image may decode to: plenty for a model that sees 160-299 px (a 4K screenshot is
# 8.3 megapixels; larger JPEGs decode reduced), a fifth of Pillow's decompression-bomb limit.
MAX_PIXELS = 16_000_000
MAX_DECODING = 2  # images decoded at once, across requests
PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "page.html")


# Server-side bounds on top of DecodeOptions' own checks (None: the vocabulary size), so that
# one request cannot ask for a vast beam. Every value is data to the compiled loop but the
# beam size, so at most 16 beam programs per batch size, each compiled on first use.
LIMITS = {"top_k": (0, None), "temperature": (0.05, 10.0), "beam_size": (1, 16),
          "alpha": (0.0, 2.0), "seed": (0, 2**31 - 1), "no_repeat_ngram": (0, 64),
          "no_consecutive_repeat": (0, 1)}
_RULES = ("no_repeat_ngram", "no_consecutive_repeat")  # every method's (as data: no compile)
_USED = {"greedy": _RULES, "sample": ("top_k", "temperature", "seed") + _RULES,
         "beam": ("beam_size", "alpha") + _RULES}  # the fields each method reads
# Plain ASCII numbers only: no underscores, no non-ASCII digits, no nan/inf, short.
_INTEGER = re.compile(r"[+-]?[0-9]{1,40}")
_NUMBER = re.compile(r"[+-]?([0-9]{1,40}\.?[0-9]{0,40}|\.[0-9]{1,40})([eE][+-]?[0-9]{1,4})?")


def describe(options: DecodeOptions) -> dict:
  """The fields that matter for this method (the `decoding` of each answer); the repetition
  rules only when on."""
  return {"method": options.method,
          **{k: getattr(options, k) for k in _USED[options.method]
             if k not in _RULES or getattr(options, k)}}


def _shown(text: str) -> str:
  return repr(text if len(text) <= 24 else text[:20] + "...")


def parse_number(name: str, text: str, integer: bool, low: float, high: float):
  """One option's text -> int or float in [low, high]; ValueError naming the field."""
  kind = "an integer" if integer else "a number"
  allowed = f"{kind} from {low} to {high}"
  if not (_INTEGER if integer else _NUMBER).fullmatch(text):
    raise ValueError(f"{name} must be {allowed} in plain digits, not {_shown(text)}")
  value = int(text) if integer else float(text)
  if not (math.isfinite(value) and low <= value <= high):
    raise ValueError(f"{name} must be {allowed}, not {_shown(text)}")
  return value


def parse_options(fields: dict[str, str], vocab_size: int,
                  default: DecodeOptions = DecodeOptions()) -> DecodeOptions:
  """Text fields (query string or form) on top of `default` -> DecodeOptions; ValueError
  naming a bad or unknown one. Fields the method does not read keep `default`'s values, so
  requests that decode alike share calls."""
  types = {f.name: f.type for f in dataclasses.fields(DecodeOptions)}
  unknown = sorted(set(fields) - set(types))
  if unknown:
    raise ValueError(f"unknown decoding option {_shown(unknown[0])} (known: "
                     f"{', '.join(types)})")
  values = {}
  for name, text in fields.items():
    if name == "method":
      if text not in _USED:
        raise ValueError(f"method must be one of {', '.join(_USED)}, not {_shown(text)}")
      values[name] = text
      continue
    low, high = LIMITS[name]
    values[name] = parse_number(name, text.strip(), types[name] in ("int", "bool"), low,
                                vocab_size if high is None else high)
    if types[name] == "bool":
      values[name] = bool(values[name])
  method = values.get("method", default.method)
  return dataclasses.replace(default, method=method,
                             **{k: v for k, v in values.items() if k in _USED[method]})


@dataclasses.dataclass
class _Item:
  image: np.ndarray  # (S, S, 3)
  options: DecodeOptions
  future: concurrent.futures.Future
  arrived: float


class Batcher:
  """Runs `fn(images (B, S, S, 3), options) -> rows (B items)` on batches of submitted images.

  One worker thread takes the oldest waiting image and, while requests announced with
  `expecting()` are still on their way (uploading, decoding), waits up to `max_wait_s` from
  its arrival for more images with the same options (images with other options wait for a
  later call); a lone request waits for nobody. It calls `fn` with at most `sizes[-1]`
  images (`fn` pads them to a compiled size) and answers each image's future with its row.
  While a call runs, new images queue, so the next batch is larger.
  """

  def __init__(self, fn: Callable, sizes: Sequence[int] = BATCH_SIZES,
               max_wait_s: float = MAX_WAIT_MS / 1000):
    self.fn, self.sizes, self.max_wait_s = fn, tuple(sorted(sizes)), max_wait_s
    self._pending: collections.deque[_Item] = collections.deque()
    self._cond = threading.Condition()
    self._closed = False
    self._incoming = 0  # requests inside expecting()
    self.batch_sizes = collections.Counter()  # images per call -> calls
    self._thread = threading.Thread(target=self._run, name="jaxcap-batcher", daemon=True)
    self._thread.start()

  def submit(self, image: np.ndarray, options: DecodeOptions) -> concurrent.futures.Future:
    future = concurrent.futures.Future()
    with self._cond:
      if self._closed:
        raise RuntimeError("batcher is closed")
      self._pending.append(_Item(image, options, future, time.monotonic()))
      self._cond.notify()
    return future

  @contextlib.contextmanager
  def expecting(self):
    """Marks a request that will `submit` soon, so the worker may wait for its images."""
    with self._cond:
      self._incoming += 1
    try:
      yield
    finally:
      with self._cond:
        self._incoming -= 1
        self._cond.notify()

  def close(self):
    with self._cond:
      self._closed = True
      self._cond.notify()
    self._thread.join()

  def _same(self, options: DecodeOptions) -> list[_Item]:
    return [item for item in self._pending if item.options == options][:self.sizes[-1]]

  def _take(self) -> list[_Item] | None:
    with self._cond:
      while not self._pending:
        if self._closed:
          return None
        self._cond.wait()
      options = self._pending[0].options
      deadline = self._pending[0].arrived + self.max_wait_s
      while (len(self._same(options)) < self.sizes[-1] and self._incoming and
             not self._closed):
        left = deadline - time.monotonic()
        if left <= 0:
          break
        self._cond.wait(left)
      batch = self._same(options)
      taken = {id(item) for item in batch}
      self._pending = collections.deque(i for i in self._pending if id(i) not in taken)
    # A caller that went away (its future cancelled) costs no compute.
    return [item for item in batch if item.future.set_running_or_notify_cancel()]

  def _run(self):
    while (batch := self._take()) is not None:
      if not batch:
        continue
      images = np.stack([item.image for item in batch])
      self.batch_sizes[len(batch)] += 1
      try:
        rows = self.fn(images, batch[0].options)
      except Exception as e:  # pylint: disable=broad-except
        for item in batch:  # the callers answer 500; the worker keeps serving
          item.future.set_exception(e)
        continue
      for item, row in zip(batch, rows):
        item.future.set_result(row)


def _rows(captioner, images: np.ndarray, options: DecodeOptions, sizes: Sequence[int],
          encode_chunk: int | None) -> list[dict]:
  """One JSON-ready answer per image: caption, words, per-word attention over the grid."""
  results = captioner.caption_batch(images, options, sizes=sizes, encode_chunk=encode_chunk)
  rows = []
  for result in results:
    positions = result.attention.shape[-1]
    side = int(round(math.sqrt(positions)))
    rows.append({"caption": result.text, "words": list(result.words),
                 "attention": np.round(result.attention.astype(np.float64), 4).tolist(),
                 "grid": [side, side] if side * side == positions else [1, positions],
                 "decoding": describe(options)})
  return rows


class RateLimit(logging.Filter):
  """Lets `burst` records through at once and then `per_s` a second; counts the others and
  appends their number to the next record it lets through (a flood cannot fill a disk)."""

  def __init__(self, per_s: float = 5.0, burst: int = 50):
    super().__init__()
    self.per_s, self.burst = per_s, burst
    self._tokens, self._last, self.dropped = float(burst), time.monotonic(), 0
    self._lock = threading.Lock()

  def filter(self, record: logging.LogRecord) -> bool:
    with self._lock:
      now = time.monotonic()
      self._tokens = min(self.burst, self._tokens + (now - self._last) * self.per_s)
      self._last = now
      if self._tokens < 1:
        self.dropped += 1
        return False
      self._tokens -= 1
      if self.dropped:
        record.msg, record.args = f"{record.getMessage()} ({self.dropped} lines left out)", ()
        self.dropped = 0
      return True


LOG = logging.getLogger("jaxcap.serve")  # one access line per request (INFO)
LOG.addFilter(RateLimit())
_NOTE = "jaxcap.note"  # a scope key: what the access line adds after the status


class _TooLarge(Exception):
  pass


class _Reject(Exception):
  """A bad request: answered `status` with {"error": message}."""

  def __init__(self, status: int, message: str):
    super().__init__(message)
    self.status, self.message = status, message


def _limited(request: Request, limit: int, marker: bytes = b""):
  """(the same request, whose body raises _TooLarge as soon as more than `limit` bytes came;
  a function telling whether `marker` (a multipart closing boundary) has been seen)."""
  received, tail, seen = 0, b"", not marker

  async def receive():
    nonlocal received, tail, seen
    message = await request.receive()
    body = message.get("body", b"")
    received += len(body)
    if received > limit:
      raise _TooLarge()
    if not seen and body:
      window = tail + body
      seen, tail = marker in window, window[-(len(marker) - 1):]
    return message

  return Request(request.scope, receive), lambda: seen


def _error(status: int, message: str, **extra) -> JSONResponse:
  return JSONResponse({"error": message, **extra}, status_code=status)


def _split_host(value: str) -> tuple[str | None, int | None]:
  """A Host header -> (name, port or None); (None, None) if malformed."""
  name, _, port = value.rpartition(":") if not value.endswith("]") else (value, "", "")
  if not name:
    name, port = value, ""
  if port and not (port.isascii() and port.isdigit() and len(port) <= 5):
    return None, None
  return (name.lower() or None), (int(port) if port else None)


class _Guard:
  """ASGI middleware: refuses requests whose Host is not this server's (DNS rebinding) or
  whose Origin is another site's (cross-site posts) with 403, and logs one line per request
  (`LOG`, rate-limited) with its status and time."""

  def __init__(self, app, *, host: str, port: int | None, allow_hosts: Sequence[str],
               allow_origins: Sequence[str]):
    self.app, self.port = app, port
    host = host.lower()
    self.names = {f"[{host}]" if ":" in host else host, "localhost", "127.0.0.1", "[::1]"}
    self.names |= {h.lower() for h in allow_hosts}
    self.any_address = host in ("0.0.0.0", "::", "")  # listening everywhere: IPs are fine
    if self.any_address:
      self.names.add(socket.gethostname().lower())
    self.origins = {o.lower().rstrip("/") for o in allow_origins}

  def _host_ok(self, host: str) -> bool:
    name, port = _split_host(host)
    if name is None or (self.port is not None and (port or 80) != self.port):
      return False
    if "*" in self.names or name in self.names:
      return True
    try:
      ipaddress.ip_address(name.strip("[]"))
      return self.any_address
    except ValueError:
      return False

  def problem(self, headers: Headers) -> str | None:
    host = headers.get("host", "")
    if not self._host_ok(host):
      return (f"Host {_shown(host)} is not this server's address; start serve.py with "
              f"--allow_host NAME to answer to another name")
    origin = headers.get("origin")
    if origin is not None:
      origin = origin.lower().rstrip("/")
      if origin not in (f"http://{host.lower()}", f"https://{host.lower()}") and not (
          "*" in self.origins or origin in self.origins):
        return (f"cross-origin request from {_shown(origin)} refused; start serve.py with "
                f"--allow_origin {origin[:100]} to let that site's pages call this server")
    return None

  async def __call__(self, scope, receive, send):
    if scope["type"] != "http":
      return await self.app(scope, receive, send)
    started, status = time.perf_counter(), 0

    async def send_status(message):
      nonlocal status
      if message["type"] == "http.response.start":
        status = message["status"]
      await send(message)

    try:
      problem = self.problem(Headers(scope=scope))
      if problem:
        await _error(403, problem)(scope, receive, send_status)
      else:
        await self.app(scope, receive, send_status)
    finally:
      client = scope.get("client") or ("-", 0)
      note = scope.get(_NOTE)
      LOG.info("%s:%s %s %s %s %.0f ms%s", client[0], client[1], scope["method"][:16],
               repr(scope["path"][:100])[1:-1], status or "-",
               1000 * (time.perf_counter() - started), f" ({note})" if note else "")


def describe_model(captioner) -> dict:
  """What /info answers: the model card's one-line `summary` (built from the rest when the
  model has no card), step, decoder, vocabulary size, image size, default decoding."""
  step, kind, vocab_size = captioner.step, captioner.spec.kind, len(captioner.vocab)
  return {"summary": captioner.summary or f"decoder {kind}, {vocab_size} words, step {step}",
          "step": step, "decoder": kind, "vocab_size": vocab_size,
          "image_size": captioner.image_size, "decoding": describe(captioner.options)}


HINT = ("POST /caption with an image (multipart field 'image', one or more files, or the "
        "file itself as the body) and optional decoding fields method, temperature, top_k, "
        "seed, beam_size, alpha, no_repeat_ngram, no_consecutive_repeat (0/1); GET / is the page, GET /health and GET /info describe the "
        "server")


def make_app(captioner, *, batch_sizes: Sequence[int] = BATCH_SIZES,
             max_wait_ms: float = MAX_WAIT_MS, max_upload_mb: float = 20,
             max_pixels: int = MAX_PIXELS, max_decoding: int = MAX_DECODING,
             encode_chunk: int | None = None, warm: bool = True, host: str = "127.0.0.1",
             port: int | None = None, allow_hosts: Sequence[str] = (),
             allow_origins: Sequence[str] = ()) -> Starlette:
  """The HTTP app around a `jaxcap.captioner.Captioner`; requests decode with
  `captioner.options` unless their fields say otherwise.

  Args:
    batch_sizes: the batch sizes compiled (at start-up when `warm`); the largest caps a call.
    max_wait_ms: how long an image waits for others to share its call.
    max_upload_mb: larger request bodies get 413 before they are read in full.
    max_pixels: the most pixels an image may decode to: larger JPEGs decode reduced
      (1/2 to 1/8), other larger images get 413 from their header, before decoding.
    max_decoding: images decoded at once (each costs up to ~16 bytes per pixel).
    encode_chunk: images per encoder pass within a batch (None: the captioner's).
    warm: compile greedy, sampling and beam search (the default beam size) at every batch
      size before serving; other beam sizes compile on first use.
    host, port: where the server listens (port None: any); requests must name it (or
      localhost) as their Host, or one of `allow_hosts` ("*": any).
    allow_origins: other sites whose pages may call the server ("*": any); by default
      only the server's own page may (a cross-origin Origin gets 403).
  """
  limit = int(max_upload_mb * 1024 * 1024)
  size = captioner.image_size
  vocab_size = len(captioner.vocab)
  model = describe_model(captioner)
  decoding_slots = threading.BoundedSemaphore(max_decoding)
  disconnects = [0]
  with open(PAGE, encoding="utf-8") as f:
    page = f.read().replace("{{MAX_UPLOAD_MB}}", f"{max_upload_mb:g}")

  def prepare(data: bytes, name: str) -> np.ndarray:  # as the encoder saw images in training
    with decoding_slots:
      rgb = image_files.decode_rgb(data, name, max_pixels)
    return captioner.prepare(rgb)  # (S, S, 3) float32, off the model thread

  async def read_form(request: Request, fields: list[tuple[str, str]]):
    _, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary", b"")
    request, closed = _limited(request, limit, b"--" + boundary + b"--" if boundary else b"")
    form = await request.form(max_files=MAX_IMAGES_PER_REQUEST, max_fields=32)
    try:
      if not closed():
        raise _Reject(400, "the multipart body ends before its closing boundary (a cut-off "
                           "upload?)")
      uploads = []
      for name, value in form.multi_items():
        if name == "image":
          if not isinstance(value, UploadFile):
            raise _Reject(400, "field 'image' must be a file, not text")
          uploads.append((await value.read(), value.filename or "image"))
        elif isinstance(value, str):
          fields.append((name, value))
        else:
          raise _Reject(400, f"field {_shown(name)} holds a file; only field 'image' takes "
                             f"files")
      if not uploads:
        raise _Reject(400, "missing field 'image' (one or more image files)")
      return uploads
    finally:
      await form.close()

  async def read(request: Request) -> tuple[list[tuple[bytes, str]], dict[str, str]]:
    """The uploaded files [(bytes, name)] and the decoding fields; _Reject if bad."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and (
        int(declared) > limit):
      raise _Reject(413, f"upload of {int(declared)} bytes is over the limit of "
                         f"{max_upload_mb:g} MB")
    fields = list(request.query_params.multi_items())
    try:
      kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
      if kind == "multipart/form-data":
        files = await read_form(request, fields)
      else:  # the image itself (curl --data-binary sends it as
        # application/x-www-form-urlencoded, which cannot carry a file anyway)
        body = await _limited(request, limit)[0].body()
        if not body:
          raise _Reject(400, "missing image: send multipart field 'image' or the image "
                             "file as the request body")
        files = [(body, "body")]
    except _TooLarge:
      raise _Reject(413, f"upload is over the limit of {max_upload_mb:g} MB") from None
    names = [name for name, _ in fields]
    twice = next((name for name in names if names.count(name) > 1), None)
    if twice is not None:
      raise _Reject(400, f"field {_shown(twice)} given more than once; give each option once")
    return files, dict(fields)

  async def caption(request: Request):
    batcher = request.app.state.batcher
    with batcher.expecting():  # from here until submitted, the batcher may wait for us
      try:
        files, fields = await read(request)
        options = parse_options(fields, vocab_size, captioner.options)
        images = [await run_in_threadpool(prepare, data, name) for data, name in files]
      except ClientDisconnect:  # nobody to answer; one note on the access line, a counter
        disconnects[0] += 1
        request.scope[_NOTE] = "client left during its upload"
        return _error(400, "client disconnected during the upload")
      except _Reject as e:
        return _error(e.status, e.message)
      except image_files.ImageTooLarge as e:
        return _error(413, str(e))
      except (ValueError, image_files.ImageError) as e:  # options, images
        return _error(400, str(e))
      futures = [asyncio.wrap_future(batcher.submit(image, options)) for image in images]
    rows = await asyncio.gather(*futures)
    for row, (_, name) in zip(rows, files):
      row["name"] = name
    return JSONResponse(rows[0] if len(rows) == 1 else rows)

  async def health(request: Request):
    batcher = request.app.state.batcher
    return JSONResponse({"status": "ok", "step": captioner.step,
                         "image_size": size, "batch_sizes": list(batcher.sizes),
                         "calls": dict(sorted(batcher.batch_sizes.items())),
                         "disconnects": disconnects[0]})

  async def info(_: Request):
    return JSONResponse({**model, "max_upload_mb": max_upload_mb, "max_pixels": max_pixels,
                         "limits": {k: [low, vocab_size if high is None else high]
                                    for k, (low, high) in LIMITS.items()}})

  async def index(_: Request):
    return HTMLResponse(page)

  async def http_error(request: Request, exc: HTTPException):
    if exc.status_code == 404:
      message = f"nothing at {_shown(request.url.path)}"
    elif exc.status_code == 405:
      message = (f"{request.method[:16]} is not allowed at {_shown(request.url.path)} "
                 f"(allowed: {Headers(exc.headers or {}).get('allow', '?')})")
    else:
      message = str(exc.detail)
    return JSONResponse({"error": message, "hint": HINT}, status_code=exc.status_code,
                        headers=exc.headers)

  async def server_error(_: Request, exc: Exception):
    return _error(500, f"internal error: {type(exc).__name__}: {exc}")

  @contextlib.asynccontextmanager
  async def lifespan(app: Starlette):
    # The batcher lives as long as the server; requests before start-up ends would fail.
    sizes = tuple(sorted(batch_sizes))
    batcher = Batcher(
        lambda images, options: _rows(captioner, images, options, sizes, encode_chunk), sizes,
        max_wait_ms / 1000)
    try:
      if warm:
        methods = [dataclasses.replace(captioner.options, method=m) for m in _USED]
        await run_in_threadpool(captioner.warm_up, methods, sizes=sizes,
                                encode_chunk=encode_chunk)
      app.state.batcher = batcher
      yield
    finally:
      await run_in_threadpool(batcher.close)

  middleware = [Middleware(_Guard, host=host, port=port, allow_hosts=allow_hosts,
                           allow_origins=allow_origins)]
  if allow_origins:  # answers other sites' pages can read, and their preflights
    middleware.append(Middleware(CORSMiddleware, allow_origins=list(allow_origins),
                                 allow_methods=["GET", "POST"]))
  return Starlette(routes=[Route("/", index), Route("/health", health), Route("/info", info),
                           Route("/caption", caption, methods=["POST"])],
                   middleware=middleware,
                   exception_handlers={HTTPException: http_error, Exception: server_error},
                   lifespan=lifespan)


@contextlib.contextmanager
def running(app: Starlette, host: str = "127.0.0.1", timeout_s: float = 600):
  """Serves `app` with uvicorn from a background thread on a free port; yields its URL.

  For tests and benchmarks: returns once start-up (compiling) is done, stops on exit.
  """
  import socket  # pylint: disable=g-import-not-at-top

  import uvicorn  # pylint: disable=g-import-not-at-top
  sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
  sock.bind((host, 0))
  server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
  thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
  thread.start()
  deadline = time.monotonic() + timeout_s
  while not server.started:
    if not thread.is_alive() or time.monotonic() > deadline:
      server.should_exit = True
      raise RuntimeError("the server did not start")
    time.sleep(0.05)
  try:
    yield f"http://{host}:{sock.getsockname()[1]}"
  finally:
    server.should_exit = True
    thread.join(timeout_s)
    sock.close()
