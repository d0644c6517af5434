"""From captioned images to training batches: features extracted once, then batched.

The encoder is frozen, so it runs over every image once (`extract_features`) and training reads
features, never pixels. Batches are a pure function of (seed, step): a resumed run sees
exactly the batches it would have seen without the interruption.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable, Iterator, Sequence

import jax
import numpy as np
import tqdm

from jaxcap.data import image_files, text
from jaxcap.data.text import Vocabulary


@dataclasses.dataclass
class Split:
  """The captioned images of one split, loaded lazily.

  keys: a unique, stable name per image (a path or an id); the feature cache is keyed by it.
  captions: every caption of each image.
  load: i -> image i as (S, S, 3) float32 in [0, 1] at the encoder's size; raises
    `jaxcap.data.image_files.ImageError` for an unreadable file.
  files: the file each image is read from, when images are files: the feature cache
    recomputes an image whose file changed.
  """
  name: str
  keys: list[str]
  captions: list[list[str]]
  load: Callable[[int], np.ndarray]
  files: list[str] | None = None

  def __len__(self) -> int:
    return len(self.keys)


@dataclasses.dataclass
class CaptionSet:
  """Image features and their captions, one example per row.

  features: (N_images, P, D) array-like (an ndarray or a memory map), usually float16.
  image_index: (N,) int, the image of each example (several captions may share one).
  tokens: (N, L) int32 caption ids (`<start>` ... `<end>`, 0-padded).
  captions: the N caption texts; references[i]: every caption of example i's image.
  lengths: (N,) int, each caption's length in tokens (`<start>`, `<end>` included) before
    it was cut to L; None where unknown.
  """
  features: np.ndarray
  image_index: np.ndarray
  tokens: np.ndarray
  captions: list[str]
  references: list[list[str]]
  lengths: np.ndarray | None = None

  def __len__(self) -> int:
    return len(self.tokens)

  def features_of(self, rows: np.ndarray) -> np.ndarray:
    """(len(rows), P, D) float32 features of examples `rows`."""
    return np.asarray(self.features[self.image_index[rows]], np.float32)


def feature_batches(
    split: Split,
    indices: Sequence[int],
    feature_fn: Callable[[np.ndarray], jax.Array],
    batch_size: int,
    skipped: list[str],
    bar: tqdm.tqdm | None = None,
) -> Iterator[tuple[list[int], np.ndarray]]:
  """Yields (rows, features (len(rows), P, D) float32) for the readable images of `indices`.

  Every batch is padded to `batch_size` so `feature_fn` compiles once. JAX dispatches
  asynchronously, so the next batch's images are read while the encoder runs on this one.
  Unreadable images are appended to `skipped` (one reason each); `bar` ticks per image.
  """
  def readable_batches():
    rows, images = [], []
    for i in indices:
      try:
        image = split.load(i)
      except image_files.ImageError as e:
        skipped.append(str(e))
        continue
      finally:
        if bar is not None:
          bar.update(1)
      rows.append(i)
      images.append(image)
      if len(images) == batch_size:
        yield rows, images
        rows, images = [], []
    if images:
      yield rows, images

  def ready(rows, feats):  # waits for the encoder, drops the padding rows
    return rows, np.asarray(feats)[:len(rows)]

  in_flight = None  # (rows, features still being computed)
  for rows, images in readable_batches():
    padded = np.stack(images + [images[-1]] * (batch_size - len(images)))
    launched = rows, feature_fn(padded)
    if in_flight is not None:
      yield ready(*in_flight)
    in_flight = launched
  if in_flight is not None:
    yield ready(*in_flight)


def extract_features(
    split: Split,
    feature_fn: Callable[[np.ndarray], jax.Array],
    *,
    batch_size: int,
    dtype=np.float16,
) -> tuple[np.ndarray, np.ndarray]:
  """Runs the frozen encoder over every image of `split`, in memory.

  `feature_fn` is a jitted (B, S, S, 3) -> (B, P, D). Unreadable images are skipped and
  listed in the log.

  Returns:
    features (N, P, D) in `dtype`, row i for split image i (zeros where unreadable), and
    `kept`, the indices of the readable images.
  """
  out, kept, skipped = None, [], []
  with tqdm.tqdm(total=len(split), desc=f"encoding {split.name} images", unit="img",
                 disable=len(split) < 256) as bar:
    for rows, feats in feature_batches(split, range(len(split)), feature_fn, batch_size,
                                       skipped, bar):
      if out is None:
        out = np.zeros((len(split),) + feats.shape[1:], dtype)
      out[rows] = feats
      kept.extend(rows)
  report_skipped(split.name, skipped)
  if out is None:
    raise ValueError(f"no readable images in the {split.name} split")
  return out, np.asarray(kept, np.int64)


def report_skipped(split_name: str, problems: Sequence[str]) -> None:
  """Logs unreadable images: a count, then each one."""
  if problems:
    logging.warning("%s: skipped %d unreadable image(s):\n  %s", split_name, len(problems),
                    "\n  ".join(problems))


def make_caption_set(features: np.ndarray, captions: Sequence[Sequence[str]],
                     vocab: Vocabulary, max_length: int, all_captions: bool,
                     image_rows: Sequence[int] | None = None) -> CaptionSet:
  """One example per image (its first caption, as the seed) or per caption (`all_captions`).

  features: (N_images, P, D); captions: a list of captions per image used;
  image_rows: each of those images' row in `features` (default 0, 1, 2, ...).
  """
  if image_rows is None:
    image_rows = range(len(captions))
  rows, texts, refs = [], [], []
  for i, image_captions in zip(image_rows, captions):
    for caption in (image_captions if all_captions else image_captions[:1]):
      rows.append(i)
      texts.append(caption)
      refs.append(list(image_captions))
  tokenized = [text.tokenize(caption) for caption in texts]
  tokens = np.zeros((len(texts), max_length), np.int32)
  for row, caption_tokens in enumerate(tokenized):
    tokens[row] = vocab.encode(caption_tokens, max_length)
  return CaptionSet(features, np.asarray(rows, np.int64), tokens, texts, refs,
                    lengths=np.asarray([len(t) for t in tokenized], np.int64))


def summary(sets: dict[str, CaptionSet], vocab: Vocabulary, max_length: int) -> str:
  """What a run trains on, in two lines: examples per split, the vocabulary size, the
  training captions' lengths and how many were cut at `max_length`; logs a warning naming
  the longest caption when any was cut."""
  splits = ", ".join(f"{name} {len(data)} examples ({len(np.unique(data.image_index))} images)"
                     for name, data in sets.items())
  train = sets["train"]
  lengths = train.lengths
  p50, p90, p99 = (int(np.ceil(p)) for p in np.percentile(lengths, [50, 90, 99]))
  long_rows = np.flatnonzero(lengths > max_length)
  if len(long_rows):
    longest = int(long_rows[np.argmax(lengths[long_rows])])
    caption = train.captions[longest]
    logging.warning("%d training caption(s) are longer than model.max_length = %d tokens and "
                    "were cut to it (<end> kept); the longest, %d tokens: %r", len(long_rows),
                    max_length, lengths[longest],
                    caption if len(caption) <= 80 else caption[:77] + "...")
  return (f"data: {splits}; vocabulary {len(vocab)} tokens (padding, [UNK], <start>, <end> "
          f"included)\ntraining captions: {lengths.min()} to {lengths.max()} tokens with "
          f"<start>/<end> (median {p50}, 90th percentile {p90}, 99th {p99}); {len(long_rows)} "
          f"longer than model.max_length = {max_length}, cut to it")


def trim_to_bucket(tokens: np.ndarray, buckets: Sequence[int]) -> np.ndarray:
  """Cuts (B, L) padded captions to the smallest bucket length that holds the longest one.

  The seed pads every caption to L; trimming only drops all-padding columns, whose targets
  are masked, so the loss is unchanged. With no buckets, tokens are returned as they are.
  Few distinct lengths keep the number of compiled shapes small.
  """
  if not buckets:
    return tokens
  longest = int((tokens != 0).sum(axis=1).max())
  fits = [b for b in sorted(buckets) if b >= longest]
  return tokens[:, :fits[0]] if fits else tokens


def train_batch(data: CaptionSet, batch_size: int, seed: int, step: int,
                buckets: Sequence[int] = ()):
  """The batch for `step`: epochs are fresh permutations of the data, drop remainder.

  Returns features (B, P, D) float32 and tokens (B, T) int32, T <= L (see trim_to_bucket).
  """
  rows = batch_rows(len(data), batch_size, seed, step)
  return data.features_of(rows), trim_to_bucket(data.tokens[rows], buckets)


def batch_rows(count: int, batch_size: int, seed: int, step: int,
               what: str = "training examples", option: str = "train.batch_size") -> np.ndarray:
  """The rows (B,) of `count` that batch `step` takes: epochs are fresh permutations, drop
  remainder; sorted, for faster reads."""
  per_epoch = count // batch_size
  if per_epoch == 0:
    raise ValueError(f"{count} {what} are fewer than one batch of {batch_size}; "
                     f"lower --config.{option}")
  epoch, offset = divmod(step, per_epoch)
  order = np.random.default_rng([seed, epoch]).permutation(count)
  return np.sort(order[offset * batch_size:(offset + 1) * batch_size])


def eval_batches(data: CaptionSet, batch_size: int,
                 buckets: Sequence[int] = ()) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Every example once, in order; the last batch is padded with all-padding captions,
  which count for nothing in the masked loss."""
  for start in range(0, len(data), batch_size):
    stop = min(start + batch_size, len(data))
    feats = data.features_of(np.arange(start, stop))
    tokens = trim_to_bucket(data.tokens[start:stop], buckets)
    pad = batch_size - (stop - start)
    if pad:
      feats = np.concatenate([feats, np.zeros((pad,) + feats.shape[1:], np.float32)])
      tokens = np.concatenate([tokens, np.zeros((pad,) + tokens.shape[1:], np.int32)])
    yield feats, tokens
