"""A trained captioner: images in any form in, captions out.

    from jaxcap import Captioner
    captioner = Captioner.load("workdirs/quickstart")     # a workdir or an exported file
    captioner.caption("photo.jpg").text                    # greedy: no key needed
    captioner.caption([image_a, image_b], method="sample", seed=1)   # a list -> a list

`caption` takes image paths, PIL images and arrays ((H, W, C) or (B, H, W, C), uint8 in
[0, 255] or float in [0, 1], C = 1 (grey), 3 (RGB) or 4 (RGBA, over white)) of any size, and
resizes them exactly as training did. Batches are padded to a few compiled sizes, so a new
batch size does not compile again. `caption_batch` is the entry for servers: already-decoded
RGB arrays and a DecodeOptions in, one `Caption` each out.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image

from jaxcap import decoding, export
from jaxcap.data import image_files, text
from jaxcap.model import decoders, encoders
from jaxcap.training import checkpoints

BATCH_SIZES = (1, 2, 4, 8, 16, 32)  # compiled batch sizes; the largest caps one call
ACCEPTED = ("an image path, a PIL image, an (H, W, C) or (B, H, W, C) array with C = 1, 3 or "
            "4 (uint8 in [0, 255] or float in [0, 1]), or a list of these")


@dataclasses.dataclass(frozen=True)
class Caption:
  """One image's caption.

  text: the caption; words: its tokens (before `<end>`); attention: (len(words), P), the
  grid attention behind each word (P: the encoder grid's positions, e.g. 25 for 5 x 5);
  log_prob: the summed log-probability of the chosen tokens (`<end>` included).
  """
  text: str
  words: list[str]
  attention: np.ndarray
  log_prob: float

  def __str__(self) -> str:
    return self.text


def restore_params(workdir: str, checkpoint: str | int | None = None):
  """(decoder params, checkpoint meta, step, step directory) of a workdir's checkpoint.

  `checkpoint`: "best" (by validation CIDEr, in <workdir>/best), "latest", a step number, or
  None / "auto": best when there is one, else latest. A damaged checkpoint is skipped for the
  next one (newest first, best before latest), with a line on stderr; a step number asked for
  by name must restore. Says on stderr which checkpoint was loaded.
  """
  checkpoint = None if checkpoint == "auto" else checkpoint
  managers = {kind: checkpoints.Checkpoints(workdir, read_only=True, kind=kind)
              for kind in (checkpoints.BEST, checkpoints.LATEST)}
  try:
    if not any(m.steps() for m in managers.values()):
      raise FileNotFoundError(
          f"no trained model in {workdir!r} (no checkpoints there); train one first, e.g. "
          f"`python train.py --config configs/quickstart.py --workdir {workdir}`")
    kinds = {None: (checkpoints.BEST, checkpoints.LATEST), "best": (checkpoints.BEST,),
             "latest": (checkpoints.LATEST,)}.get(checkpoint, (checkpoints.LATEST,
                                                               checkpoints.BEST))
    if isinstance(checkpoint, str) and not managers[kinds[0]].steps():
      raise FileNotFoundError(f"no {checkpoint} checkpoint in {workdir!r} ({kinds[0]}/ is "
                              "empty; best/ is written only by runs that validate)")
    if isinstance(checkpoint, int) and not any(checkpoint in m.steps()
                                               for m in managers.values()):
      listed = "; ".join(f"{kind}/: {', '.join(map(str, m.steps())) or 'none'}"
                         for kind, m in managers.items())
      raise FileNotFoundError(f"no checkpoint of step {checkpoint} in {workdir!r} ({listed})")
    for manager in (managers[kind] for kind in kinds):
      steps = [checkpoint] if isinstance(checkpoint, int) else None
      if steps and checkpoint not in manager.steps():
        continue
      step, found = manager.newest_readable(
          lambda s, m=manager: (m.restore_params(s), m.restore_meta(s)), steps)
      if found is not None:
        params, meta = found
        cider = (f", validation CIDEr {meta['val_cider'] * export.CIDER_SCALE:.1f}"
                 if "val_cider" in meta else "")
        print(f"loaded {manager.step_dir(step)} (step {step}{cider})", file=sys.stderr)
        return params, meta, step, manager.step_dir(step)
    raise checkpoints.UnreadableCheckpointError(
        f"no readable checkpoint in {workdir!r} (see the warnings above)")
  finally:
    for manager in managers.values():
      manager.close()


@functools.partial(jax.jit, static_argnames="feature_fn")
def _extract_features(feature_fn, encoder_params, images: jax.Array) -> jax.Array:
  """images (B, S, S, 3) -> features (B, P, D) float32."""
  return feature_fn(encoder_params, images).astype(jnp.float32)


def bucket(n: int, sizes: Sequence[int]) -> int:
  """The smallest of `sizes` (ascending) that holds n rows (n <= sizes[-1])."""
  return next(size for size in sizes if size >= n)


def chunk_sizes(encode_chunk: int) -> list[int]:
  """The encoder batch sizes used with this chunk: 1, 2, 4, ..., the chunk."""
  return [2**i for i in range(encode_chunk.bit_length()) if 2**i < encode_chunk] + [
      encode_chunk]


def default_encode_chunk() -> int:
  """Images per encoder pass inside a batch: 4 on a CPU, the whole batch (0) elsewhere.

  On a CPU, MobileNetV2 at 160 px costs 2-4x more per image in batches of 8-16 than in
  batches of 2-4 (the activations outgrow the caches; measured on a 2-core EPYC), and
  chunks waste at most 3 padded images, while the decoding loop gains from the whole batch.
  """
  return 4 if jax.default_backend() == "cpu" else 0


def _describe(x) -> str:
  """What was given, for an error message."""
  if isinstance(x, np.ndarray) or hasattr(x, "__array__") and hasattr(x, "shape"):
    return f"an array of shape {tuple(x.shape)} and dtype {getattr(x, 'dtype', '?')}"
  return f"an object of type {type(x).__name__}" + (
      f" ({x!r:.60})" if isinstance(x, (int, float, bytes)) else "")


class Captioner:
  """A decoder, its vocabulary and its frozen encoder: images in, `Caption`s out.

  Build one with `Captioner.load(path)` (a training workdir or an exported file) or from
  memory: `Captioner(params, spec, vocab, encoder, encoder_params)`.

  Attributes: `params`, `spec` (the decoder), `vocab`, `encoder` (module), `encoder_params`,
  `image_size`, `resize_method`, `options` (the default decoding: greedy), `card` (the model
  card, a dict with a one-line "summary"; {} when unknown), `config` (the training config,
  None for one built in memory), `step`.
  """

  def __init__(self, params, spec: decoders.DecoderSpec, vocab: text.Vocabulary | Sequence[str],
               encoder: str | Any, encoder_params=None, *, image_size: int | None = None,
               resize_method: str = "pil_bilinear",
               options: decoding.DecodeOptions | None = None, card: dict | None = None,
               config: ml_collections.ConfigDict | None = None, step: int | None = None,
               batch_sizes: Sequence[int] = BATCH_SIZES, encode_chunk: int | None = None):
    """Args:
      params: the decoder parameters (a pytree; moved to the device once here).
      spec: what the decoder is.
      vocab: a Vocabulary or its token list.
      encoder: an encoder's name ("mobilenet_v2", ...) or module (`jaxcap.model.encoders`).
      encoder_params: its parameters (None: the ImageNet weights it loads by default).
      image_size: the encoder's input side in pixels (None: the backbone's standard).
      resize_method: how images are resized to it (`image_files.RESIZE_METHODS`), as in
        training (the config's `encoder.resize`).
      options: the default decoding (None: greedy).
      batch_sizes: the compiled batch sizes; a batch is padded up to one of them.
      encode_chunk: images per encoder pass within a batch (None: `default_encode_chunk`).
    """
    self.encoder = encoders.get(encoder) if isinstance(encoder, str) else encoder
    self.encoder_params = (self.encoder.load_params() if encoder_params is None
                           else encoder_params)
    self.params = jax.device_put(params)
    self.spec = spec
    self.vocab = vocab if isinstance(vocab, text.Vocabulary) else text.Vocabulary(vocab)
    self.image_size = image_size or self.encoder.IMAGE_SIZE
    self.resize_method = image_files.check_resize_method(resize_method)
    self.options = options or decoding.DecodeOptions()
    self.card = card or {}
    self.config = config
    self.step = step
    self.batch_sizes = tuple(sorted(batch_sizes))
    self.encode_chunk = default_encode_chunk() if encode_chunk is None else encode_chunk

  # Loading and saving.

  @classmethod
  def load(cls, path: str | os.PathLike, checkpoint: str | int | None = "auto",
           **kwargs) -> "Captioner":
    """A training workdir's model (from `checkpoint`: "auto", "best", "latest" or a step;
    see `restore_params`) or an exported model file's (`export.py`).

    Raises FileNotFoundError (nothing there, no checkpoints) or ValueError (not a model).
    Other keyword arguments go to the constructor (batch_sizes, encode_chunk).
    """
    path = os.fspath(path)
    if isinstance(checkpoint, str) and checkpoint.isdigit():
      checkpoint = int(checkpoint)
    if os.path.isdir(path):
      return cls._from_workdir(path, checkpoint, **kwargs)
    if not os.path.exists(path):
      raise FileNotFoundError(f"{path}: no such workdir or model file")
    if checkpoint not in ("auto", None):
      raise ValueError(f"checkpoint={checkpoint!r}: a model file holds one model; "
                       "checkpoints are chosen in a workdir")
    params, header = export.read(path)
    config = ml_collections.ConfigDict(header["config"]) if header.get("config") else None
    encoder = header["encoder"]
    module = encoders.get(encoder["name"])
    return cls(params, decoders.DecoderSpec.from_dict(header["spec"]), header["vocab"],
               module, module.load_params(encoder.get("weights") or None),
               image_size=encoder["image_size"],
               resize_method=encoder["resize"],
               options=decoding.DecodeOptions(**header["decoding"]), card=header.get("card"),
               config=config, step=header.get("step"), **kwargs)

  @classmethod
  def _from_workdir(cls, workdir: str, checkpoint, **kwargs) -> "Captioner":
    params, meta, step, step_dir = restore_params(workdir, checkpoint)
    config = ml_collections.ConfigDict(meta["config"])
    encoder = encoders.get(meta["encoder"])
    card = export.model_card(workdir, meta, step, trained=os.path.getmtime(step_dir))
    # Every tool decodes greedily unless asked otherwise; the config's `decoding` section
    # gives the settings of the other methods.
    options = dataclasses.replace(decoding.DecodeOptions.from_config(config), method="greedy")
    return cls(params, decoders.spec_from_meta(meta), meta["vocab"], encoder,
               encoder.load_params(config.encoder.weights or None),
               image_size=encoders.image_size(config.encoder),
               resize_method=image_files.resize_method_of(config.encoder), options=options,
               card=card, config=config, step=step, **kwargs)

  def header(self) -> dict:
    """What `save` writes beside the params (see `export.py`)."""
    weights = self.config.encoder.get("weights", "") if self.config else ""
    return {"spec": self.spec.to_dict(), "vocab": self.vocab.tokens,
            "encoder": {"name": self.encoder.NAME, "weights": weights,
                        "image_size": self.image_size, "resize": self.resize_method},
            "decoding": self.options.to_dict(),
            "config": self.config.to_dict() if self.config else None,
            "card": self.card, "step": self.step}

  def save(self, path: str | os.PathLike) -> None:
    """Writes this model to one file (`export.py`); `Captioner.load(path)` reads it back."""
    export.write(os.fspath(path), jax.device_get(self.params), self.header())

  @property
  def summary(self) -> str:
    """The model card's one-line summary ("" when there is no card)."""
    return self.card.get("summary", "")

  @property
  def max_length(self) -> int:
    return self.spec.max_length

  # Images.

  def prepare(self, image) -> np.ndarray:
    """One image (a path, a PIL image, an (H, W, C) array) -> float32 (S, S, 3) in [0, 1], as
    the encoder saw images in training. Raises ValueError naming what was given."""
    if isinstance(image, (str, os.PathLike)):
      return image_files.resize(image_files.load_rgb(image), self.image_size,
                                self.resize_method)
    if isinstance(image, Image.Image):
      try:
        rgb = image_files.from_pil(image)
      except ValueError as e:
        raise ValueError(f"a PIL image of mode {image.mode!r} cannot be converted to RGB "
                         f"({e})") from None
      return image_files.resize(rgb, self.image_size, self.resize_method)
    array = self._checked_array(image)
    if array.ndim != 3:
      raise ValueError(f"got {_describe(image)} (rank {array.ndim}) as one image; accepted: "
                       "an (H, W, C) array with C = 1, 3 or 4")
    return self._prepare_array(array)

  def load_image(self, path) -> np.ndarray:
    """An image file -> float32 (S, S, 3) in [0, 1] (`prepare` of a path)."""
    return self.prepare(path)

  def _checked_array(self, x) -> np.ndarray:
    """x as a NumPy array of an accepted dtype, rank and range; ValueError otherwise."""
    if not (isinstance(x, np.ndarray) or hasattr(x, "__array__")):
      raise ValueError(f"cannot caption {_describe(x)}; accepted: {ACCEPTED}")
    array = np.asarray(x)
    given = _describe(array)
    if array.ndim not in (3, 4):
      raise ValueError(f"got {given} (rank {array.ndim}); accepted: an (H, W, C) image or a "
                       "(B, H, W, C) batch with C = 1 (grey), 3 (RGB) or 4 (RGBA)")
    if array.shape[-1] not in (1, 3, 4):
      raise ValueError(f"got {given}: {array.shape[-1]} channels; accepted: C = 1 (grey), "
                       "3 (RGB) or 4 (RGBA) as the last axis of (H, W, C) or (B, H, W, C)")
    if 0 in array.shape:
      raise ValueError(f"got {given}: an empty image")
    if array.dtype == np.uint8:
      return array
    if not np.issubdtype(array.dtype, np.floating):
      hint = " (for values 0..255, .astype(np.uint8))" if np.issubdtype(
          array.dtype, np.integer) else ""
      raise ValueError(f"got {given}; accepted pixel types: uint8 in [0, 255] or float in "
                       f"[0, 1]{hint}")
    if not np.isfinite(array).all():
      raise ValueError(f"got {given} holding NaN or infinite values; accepted: float pixels "
                       "in [0, 1]")
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > 1:
      raise ValueError(f"got {given} with values {low:g}..{high:g}; accepted: float pixels "
                       "in [0, 1] (divide 0..255 values by 255, or pass uint8)")
    return array

  def _prepare_array(self, array: np.ndarray) -> np.ndarray:
    """A checked (H, W, C) array -> float32 (S, S, 3) in [0, 1].

    Float RGB already at the encoder's size is used as it is. Other floats are rounded to
    8 bits first, as image files are, so `x / 255` captions as `x` does; then the channels
    become RGB (grey repeated; RGBA composited over white, as for files) and the image is
    resized by the training resize method.
    """
    size = self.image_size
    if array.dtype != np.uint8:
      if array.shape == (size, size, 3):
        return array.astype(np.float32)
      array = np.rint(array.astype(np.float64) * 255).astype(np.uint8)
    if array.shape[-1] == 1:
      array = np.repeat(array, 3, axis=-1)
    elif array.shape[-1] == 4:
      array = image_files.from_pil(Image.fromarray(array, "RGBA"))
    return image_files.resize(array, size, self.resize_method)

  def _flatten(self, images) -> tuple[list[np.ndarray], bool]:
    """(prepared images, whether the input was one image)."""
    if isinstance(images, (list, tuple)):
      out = []
      for item in images:
        out.extend(self._flatten(item)[0])
      return out, False
    if isinstance(images, (str, os.PathLike, Image.Image)):
      return [self.prepare(images)], True
    array = self._checked_array(images)
    if array.ndim == 4:
      return [self._prepare_array(row) for row in array], False
    return [self._prepare_array(array)], True

  # Captioning.

  def caption(self, images, options: decoding.DecodeOptions | None = None, **decoding_fields):
    """Captions images of any accepted form (see the module docstring).

    One image (a path, a PIL image, an (H, W, C) array) -> one `Caption`; a list or a
    (B, H, W, C) batch -> a list, one per image, in order. Decoding: `options`, or fields
    of DecodeOptions on top of the default (greedy), e.g. `method="sample", seed=3` or
    `method="beam", beam_size=5`. Raises ValueError for anything else.
    """
    unknown = sorted(set(decoding_fields) - {f.name for f in
                                             dataclasses.fields(decoding.DecodeOptions)})
    if unknown:
      raise ValueError(f"unknown decoding option {unknown[0]!r}; known: "
                       f"{', '.join(f.name for f in dataclasses.fields(decoding.DecodeOptions))}")
    options = dataclasses.replace(options or self.options, **decoding_fields)
    prepared, single = self._flatten(images)
    results = self.caption_batch(prepared, options)
    return results[0] if single else results

  def caption_batch(self, images: Sequence[np.ndarray],
                    options: decoding.DecodeOptions | None = None, *,
                    sizes: Sequence[int] | None = None,
                    encode_chunk: int | None = None) -> list[Caption]:
    """For servers: already-decoded images, one `Caption` each, in order.

    images: (H, W, 3) uint8 RGB arrays of any size (resized here as in training) or
      float32 (S, S, 3) arrays in [0, 1] from `prepare`.
    options: the decoding (default: `self.options`); sampling draws from
      `jax.random.key(options.seed)`.
    sizes: the compiled batch sizes (default: `self.batch_sizes`); the images are padded
      up to the next one, more than the largest go in several calls.
    encode_chunk: images per encoder pass (default: `self.encode_chunk`; 0: the whole
      padded batch at once).

    The encoder and the decoding loop compile apart, so new decoding options compile only
    the small decoding loop.
    """
    options = options or self.options
    sizes = tuple(sorted(sizes)) if sizes else self.batch_sizes
    encode_chunk = self.encode_chunk if encode_chunk is None else encode_chunk
    prepared = np.stack([self._prepare_array(self._checked_array(image)) for image in images]
                        ) if len(images) else np.zeros((0, self.image_size, self.image_size, 3))
    key = jax.random.key(options.seed)
    results = []
    for start in range(0, len(prepared), sizes[-1]):
      chunk_key = key if start == 0 else jax.random.fold_in(key, start)
      results.extend(self._run(prepared[start:start + sizes[-1]], options, chunk_key, sizes,
                               encode_chunk))
    return results

  def warm_up(self, methods: Sequence[decoding.DecodeOptions], *,
              sizes: Sequence[int] | None = None, encode_chunk: int | None = None) -> None:
    """Compiles now what `caption_batch(images, options, sizes=, encode_chunk=)` runs for any
    number of images up to the largest size, so the first callers wait for no compiling: the
    encoder at every batch it uses, the decoding loop of each of `methods` (one per method
    and beam size; the other option values are data to it) at every one of `sizes`."""
    sizes = tuple(sorted(sizes)) if sizes else self.batch_sizes
    encode_chunk = self.encode_chunk if encode_chunk is None else encode_chunk
    blank = np.zeros((sizes[-1], self.image_size, self.image_size, 3), np.float32)
    if encode_chunk:  # a batch's last chunk is padded to one of chunk_sizes
      chunks = chunk_sizes(encode_chunk)
      for n in sorted({bucket(n, chunks) for n in range(1, min(encode_chunk, sizes[-1]) + 1)}):
        jax.block_until_ready(self.features(blank[:n], n, encode_chunk))
    for options in methods:
      for size in sizes:
        self.caption_batch(blank[:size], options, sizes=sizes, encode_chunk=encode_chunk)

  def features(self, images: np.ndarray, size: int, encode_chunk: int) -> jax.Array:
    """Prepared images (n, S, S, 3) -> encoder features (size, P, D), padded (n <= size)."""
    extract = functools.partial(_extract_features, self.encoder.features, self.encoder_params)
    count = len(images)
    if not encode_chunk:
      return extract(decoding.pad_rows(images, size))
    parts = [images[i:i + encode_chunk] for i in range(0, count, encode_chunk)]
    features = np.concatenate([
        np.asarray(extract(decoding.pad_rows(part, bucket(len(part),
                                                          chunk_sizes(encode_chunk)))))[
            :len(part)] for part in parts])
    return decoding.pad_rows(features, size)

  def _run(self, images: np.ndarray, options: decoding.DecodeOptions, key: jax.Array,
           sizes: Sequence[int], encode_chunk: int) -> list[Caption]:
    """At most sizes[-1] prepared images -> their Captions, in one padded call."""
    count = len(images)
    features = self.features(images, bucket(count, sizes), encode_chunk)
    # The seed goes in as the key, not in the (static) options: one compile for all seeds.
    tokens, attention, log_probs = decoding.decode_jit(
        self.params, self.spec, features, key, dataclasses.replace(options, seed=0),
        start_id=self.vocab.start_id, end_id=self.vocab.end_id, max_length=self.max_length)
    tokens = np.asarray(tokens)[:count]
    attention, log_probs = np.asarray(attention)[:count], np.asarray(log_probs)[:count]
    results = []
    for row, att, log_prob in zip(tokens, attention, log_probs):
      words = self.vocab.words(row)
      results.append(Caption(self.vocab.to_text(row), words, att[:len(words)],
                             float(log_prob)))
    return results
