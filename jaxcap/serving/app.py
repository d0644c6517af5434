"""Captions over HTTP: a Starlette app around a `Captioner`, with concurrent requests batched.

  make_app(captioner)   GET / (the page), POST /caption, GET /health
  Batcher               images submitted within a few ms of each other -> one compiled call

Every model call goes through `caption_batch`, the one place that speaks the decoding API.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import functools
import math
import os
import threading
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from jaxcap import decoding
from jaxcap.data import image_files
from jaxcap.decoding.options import DecodeOptions
from jaxcap.model import encoders

BATCH_SIZES = (1, 4, 8, 16, 32)  # compiled at start-up; a batch is padded up to one of them
MAX_WAIT_MS = 5.0  # how long the first image of a batch waits for company
MAX_IMAGES_PER_REQUEST = 64
PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "page.html")


# Server-side bounds on top of DecodeOptions' own checks (None: the vocabulary size), so that
# one request cannot ask for a vast beam.
LIMITS = {"top_k": (0, None), "temperature": (0.05, 10.0), "beam_size": (1, 16),
          "alpha": (0.0, 2.0), "seed": (0, 2**31 - 1)}
_USED = {"greedy": (), "sample": ("top_k", "temperature", "seed"),
         "beam": ("beam_size", "alpha")}  # the fields each method reads


def describe(options: DecodeOptions) -> dict:
  """The fields that matter for this method (the `decoding` of each answer)."""
  return {"method": options.method,
          **{k: getattr(options, k) for k in _USED[options.method]}}


def parse_options(fields: dict[str, str], vocab_size: int) -> DecodeOptions:
  """Text fields (query string or form) -> DecodeOptions; ValueError naming a bad or unknown
  one. Fields the method does not read keep their defaults, so requests that decode alike
  share calls and compiled programs."""
  types = {f.name: f.type for f in dataclasses.fields(DecodeOptions)}
  unknown = sorted(set(fields) - set(types))
  if unknown:
    raise ValueError(f"unknown decoding option {unknown[0]!r} (known: {', '.join(types)})")
  values = {}
  for name, text in fields.items():
    if name == "method":  # DecodeOptions checks it
      values[name] = text
      continue
    kind = int if types[name] == "int" else float
    try:
      value = kind(text)
    except ValueError:
      raise ValueError(f"{name} must be {'an integer' if kind is int else 'a number'}, "
                       f"not {text!r}") from None
    low, high = LIMITS[name]
    high = vocab_size if high is None else high
    if not (math.isfinite(value) and low <= value <= high):
      raise ValueError(f"{name} must be in [{low}, {high}], not {text!r}")
    values[name] = value
  method = values.get("method", "greedy")
  return DecodeOptions(method, **{k: v for k, v in values.items() if k in _USED.get(method, ())})


@functools.partial(jax.jit, static_argnames="feature_fn")
def _extract_features(feature_fn, encoder_params, images: jax.Array) -> jax.Array:
  """images (B, S, S, 3) -> features (B, P, D) float32."""
  return feature_fn(encoder_params, images).astype(jnp.float32)


def caption_batch(captioner, images: np.ndarray, options: DecodeOptions,
                  sizes: Sequence[int] = (), encode_chunk: int = 0):
  """images (B, S, S, 3) in [0, 1] -> (captions, words, attention (B, L, P)).

  The decoding loop runs on the batch padded up to the next of `sizes` (none: as it is).
  The encoder runs on the same padded batch, or with `encode_chunk` > 0 on chunks of that
  many real images (a short last chunk padded to a power of two); see
  `default_encode_chunk`. The encoder and the decoding loop compile apart (unlike
  `Captioner.caption`), so new decoding options compile only the small decoding loop.
  """
  count = images.shape[0]
  size = bucket(count, sizes) if sizes else count
  extract = functools.partial(_extract_features, captioner.encoder.features,
                              captioner.encoder_params)
  if encode_chunk:
    parts = [images[i:i + encode_chunk] for i in range(0, count, encode_chunk)]
    features = np.concatenate([
        np.asarray(extract(_pad(part, bucket(len(part), chunk_sizes(encode_chunk)))))[
            :len(part)] for part in parts])
    features = _pad(features, size)
  else:
    features = extract(_pad(images, size))
  # The seed goes in as the key, not as part of the options (static: one compile each).
  tokens, attention, _ = decoding.decode_jit(
      captioner.params, captioner.spec, features, jax.random.key(options.seed),
      dataclasses.replace(options, seed=0), start_id=captioner.vocab.start_id,
      end_id=captioner.vocab.end_id, max_length=captioner.config.model.max_length)
  tokens = np.asarray(tokens)[:count]
  return ([captioner.vocab.to_text(row) for row in tokens],
          [captioner.vocab.words(row) for row in tokens], np.asarray(attention)[:count])


def chunk_sizes(encode_chunk: int) -> list[int]:
  """The encoder batch sizes `caption_batch` uses with this chunk: 1, 2, 4, ..., the chunk."""
  return [2**i for i in range(encode_chunk.bit_length()) if 2**i < encode_chunk] + [
      encode_chunk]


def _pad(rows: np.ndarray, size: int) -> np.ndarray:
  """rows (n, ...) -> (size, ...), the last row repeated (n <= size)."""
  return np.concatenate([rows, np.repeat(rows[-1:], size - len(rows), axis=0)])


def default_encode_chunk() -> int:
  """Images per encoder pass inside a batch: 4 on a CPU, the whole batch (0) elsewhere.

  On a CPU, MobileNetV2 at 160 px costs 2-4x more per image in batches of 8-16 than in
  batches of 2-4 (the activations outgrow the caches; measured on a 2-core EPYC), and
  chunks waste at most 3 padded images, while the decoding loop gains from the whole batch.
  """
  return 4 if jax.default_backend() == "cpu" else 0


def bucket(n: int, sizes: Sequence[int]) -> int:
  """The smallest of `sizes` that holds n images (sizes ascending, n <= sizes[-1])."""
  return next(size for size in sizes if size >= n)


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

  def warm(self, image_shape: tuple[int, ...], counts: Sequence[int] = (),
           options: DecodeOptions = DecodeOptions()):
    """Calls `fn` now on each of `counts` images (default: `sizes`), so what it compiles
    is compiled before the first request comes."""
    for count in counts or self.sizes:
      self.fn(np.zeros((count,) + tuple(image_shape), np.float32), options)

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
          encode_chunk: int) -> list[dict]:
  """One JSON-ready answer per image: caption, words, per-word attention over the grid."""
  captions, words, attention = caption_batch(captioner, images, options, sizes, encode_chunk)
  positions = attention.shape[-1]
  side = int(round(math.sqrt(positions)))
  grid = [side, side] if side * side == positions else [1, positions]
  return [{"caption": caption, "words": list(ws),
           "attention": np.round(att[:len(ws)].astype(np.float64), 4).tolist(),
           "grid": grid, "decoding": describe(options)}
          for caption, ws, att in zip(captions, words, attention)]


class _TooLarge(Exception):
  pass


class _Reject(Exception):
  """A bad request: answered `status` with {"error": message}."""

  def __init__(self, status: int, message: str):
    super().__init__(message)
    self.status, self.message = status, message


def _limited(request: Request, limit: int) -> Request:
  """The same request, whose body raises _TooLarge as soon as more than `limit` bytes came."""
  received = 0

  async def receive():
    nonlocal received
    message = await request.receive()
    received += len(message.get("body", b""))
    if received > limit:
      raise _TooLarge()
    return message

  return Request(request.scope, receive)


def _error(status: int, message: str) -> JSONResponse:
  return JSONResponse({"error": message}, status_code=status)


def make_app(captioner, *, batch_sizes: Sequence[int] = BATCH_SIZES,
             max_wait_ms: float = MAX_WAIT_MS, max_upload_mb: float = 20,
             max_pixels: int | None = None, encode_chunk: int | None = None,
             warm: bool = True) -> Starlette:
  """The HTTP app; `captioner` is a `jaxcap.captioner.Captioner` (or anything as callable).

  Args:
    batch_sizes: the batch sizes compiled (at start-up when `warm`); the largest caps a call.
    max_wait_ms: how long an image waits for others to share its call.
    max_upload_mb: larger request bodies get 413 before they are read in full.
    max_pixels: larger images get 400 before they are decoded (default: Pillow's
      decompression-bomb warning limit, ~89 megapixels).
    encode_chunk: images per encoder pass within a batch (default: `default_encode_chunk`).
  """
  limit = int(max_upload_mb * 1024 * 1024)
  encode_chunk = default_encode_chunk() if encode_chunk is None else encode_chunk
  max_pixels = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
  size = captioner.image_size
  vocab_size = len(captioner.vocab)
  with open(PAGE, encoding="utf-8") as f:
    page = f.read().replace("{{MAX_UPLOAD_MB}}", f"{max_upload_mb:g}")

  resize_method = image_files.resize_method_of(captioner.config.encoder)

  def prepare(data: bytes, name: str) -> np.ndarray:  # as the encoder saw images in training
    return image_files.resize(image_files.decode_rgb(data, name, max_pixels), size, resize_method)

  async def read(request: Request) -> tuple[list[tuple[bytes, str]], dict[str, str]]:
    """The uploaded files [(bytes, name)] and the decoding fields; _Reject if bad."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
      raise _Reject(413, f"upload of {int(declared)} bytes is over the limit of "
                         f"{max_upload_mb:g} MB")
    request = _limited(request, limit)
    fields = dict(request.query_params)
    try:
      kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
      if kind != "multipart/form-data":  # the image itself (curl --data-binary sends it as
        # application/x-www-form-urlencoded, which cannot carry a file anyway)
        body = await request.body()
        if not body:
          raise _Reject(400, "missing image: send multipart field 'image' or the image "
                             "file as the request body")
        return [(body, "body")], fields
      form = await request.form(max_files=MAX_IMAGES_PER_REQUEST, max_fields=32)
      uploads = form.getlist("image")
      fields.update((k, v) for k, v in form.multi_items() if k != "image" and
                    isinstance(v, str))
      if not uploads:
        raise _Reject(400, "missing field 'image' (one or more image files)")
      if any(not isinstance(u, UploadFile) for u in uploads):
        raise _Reject(400, "field 'image' must be a file, not text")
      return [(await u.read(), u.filename or "image") for u in uploads], fields
    except _TooLarge:
      raise _Reject(413, f"upload is over the limit of {max_upload_mb:g} MB") from None

  async def caption(request: Request):
    batcher = request.app.state.batcher
    with batcher.expecting():  # from here until submitted, the batcher may wait for us
      try:
        files, fields = await read(request)
        options = parse_options(fields, vocab_size)
        images = [await run_in_threadpool(prepare, data, name) for data, name in files]
      except _Reject as e:
        return _error(e.status, e.message)
      except (ValueError, image_files.ImageError) as e:  # options, images
        return _error(400, str(e))
      futures = [asyncio.wrap_future(batcher.submit(image, options)) for image in images]
    rows = await asyncio.gather(*futures)
    for row, (_, name) in zip(rows, files):
      row["name"] = name
    return JSONResponse(rows[0] if len(rows) == 1 else rows)

  async def health(request: Request):
    batcher = request.app.state.batcher
    return JSONResponse({"status": "ok", "step": getattr(captioner, "step", None),
                         "image_size": size, "batch_sizes": list(batcher.sizes),
                         "calls": dict(sorted(batcher.batch_sizes.items()))})

  async def index(_: Request):
    return HTMLResponse(page)

  async def http_error(_: Request, exc: HTTPException):
    return _error(exc.status_code, str(exc.detail))

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
      if warm:  # every decoding batch size and every encoder chunk size
        chunks = chunk_sizes(encode_chunk) if encode_chunk else []
        counts = sorted(set(sizes) | {c for c in chunks if c <= sizes[-1]})
        await run_in_threadpool(batcher.warm, (size, size, 3), counts)
      app.state.batcher = batcher
      yield
    finally:
      await run_in_threadpool(batcher.close)

  app = Starlette(routes=[Route("/", index), Route("/health", health),
                          Route("/caption", caption, methods=["POST"])],
                  exception_handlers={HTTPException: http_error, Exception: server_error},
                  lifespan=lifespan)
  return app


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
