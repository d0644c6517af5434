"""From captioned images to training batches: features extracted once, then batched.

The encoder is frozen, so it runs over every image once (`extract_features`) and training reads
features, never pixels. Batches are a pure function of (seed, step): a resumed run sees
exactly the batches it would have seen without the interruption.

Sharding: a split's images are cut into `data.shards` contiguous ranges (`shard_ranges`), and
each JAX process owns an even share of the shards (`process_shards`, Grain's
ShardByJaxProcess). A process encodes and holds the features of its own shards only; the
caption text (a few hundred bytes an example) is known to every process. Batch `step` takes
batch_size / shards examples from each shard, sampled by Grain (a per-shard shuffle, fresh each
epoch), so the global batch is the same for any number of processes that divides the shards.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable, Iterator, Sequence

import grain
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
  feature_offset: the split image that `features` row 0 holds: a process holds the rows of
    its own shards only.
  shards: each shard's examples, a (start, stop) range of rows; examples are in image order.
  local: the shards this process owns (and holds the features of).
  """
  features: np.ndarray
  image_index: np.ndarray
  tokens: np.ndarray
  captions: list[str]
  references: list[list[str]]
  lengths: np.ndarray | None = None
  feature_offset: int = 0
  shards: tuple[tuple[int, int], ...] = ()
  local: range = range(1)

  def __post_init__(self):
    if not self.shards:
      self.shards = ((0, len(self.tokens)),)

  def __len__(self) -> int:
    return len(self.tokens)

  @property
  def processes(self) -> int:
    """How many processes share the shards."""
    return len(self.shards) // len(self.local)

  def process_rows(self, process: int) -> range:
    """The examples of process `process`'s shards."""
    first, count = process * len(self.local), len(self.local)
    return range(self.shards[first][0], self.shards[first + count - 1][1])

  def features_of(self, rows: np.ndarray) -> np.ndarray:
    """(len(rows), P, D) float32 features of examples `rows` (of this process's shards)."""
    images = self.image_index[rows] - self.feature_offset
    if len(images) and (images.min() < 0 or images.max() >= len(self.features)):
      raise IndexError("examples outside this process's shards")
    return np.asarray(self.features[images], np.float32)


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
    rows: range | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """Runs the frozen encoder over the images `rows` of `split` (default all), in memory.

  `feature_fn` is a jitted (B, S, S, 3) -> (B, P, D). Unreadable images are skipped and
  listed in the log.

  Returns:
    features (len(rows), P, D) in `dtype`, row i for split image rows.start + i (zeros where
    unreadable), and `kept`, the indices of the readable images, counted from rows.start.
  """
  rows = range(len(split)) if rows is None else rows
  out, kept, skipped = None, [], []
  with tqdm.tqdm(total=len(rows), desc=f"encoding {split.name} images", unit="img",
                 disable=len(rows) < 256) as bar:
    for done, feats in feature_batches(split, rows, feature_fn, batch_size, skipped, bar):
      if out is None:
        out = np.zeros((len(rows),) + feats.shape[1:], dtype)
      local = np.asarray(done) - rows.start
      out[local] = feats
      kept.extend(local)
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
                     image_rows: Sequence[int] | None = None, feature_offset: int = 0
                     ) -> CaptionSet:
  """One example per image (its first caption, as the seed) or per caption (`all_captions`).

  features: (N_images, P, D); captions: a list of captions per image used;
  image_rows: each of those images' index (ascending; default 0, 1, 2, ...), whose features
  are row index - feature_offset of `features`.
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
                    lengths=np.asarray([len(t) for t in tokenized], np.int64),
                    feature_offset=feature_offset)


def shard_ranges(total: int, count: int) -> list[tuple[int, int]]:
  """`count` contiguous (start, stop) ranges over range(total), sizes differing by at most one
  (the first total % count ranges one larger), as Grain's even split does."""
  per, extra = divmod(total, count)
  bounds = [k * per + min(k, extra) for k in range(count + 1)]
  return list(zip(bounds[:-1], bounds[1:]))


def process_shards(count: int) -> range:
  """The shards of `count` that this JAX process owns: an even, contiguous share
  (grain.sharding.ShardByJaxProcess says which)."""
  share = grain.sharding.ShardByJaxProcess()
  if count % share.shard_count:
    raise ValueError(f"data.shards = {count} must be a multiple of the number of processes "
                     f"({share.shard_count}); 0 gives one shard per process")
  per = count // share.shard_count
  return range(share.shard_index * per, (share.shard_index + 1) * per)


def with_shards(data: CaptionSet, image_ranges: Sequence[tuple[int, int]],
                local: range) -> CaptionSet:
  """`data` cut into shards by image: shard k holds the examples of images image_ranges[k]."""
  starts = np.searchsorted(data.image_index, [lo for lo, _ in image_ranges])
  bounds = list(starts) + [len(data)]
  return dataclasses.replace(data, shards=tuple(
      (int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])), local=local)


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


def index_batches(count: int, batch_size: int, seed: int, shard: int = 0,
                  what: str = "training examples", option: str = "train.batch_size"
                  ) -> grain.MapDataset:
  """Grain's sampler: element `step` is the (batch_size,) sorted rows of range(count) that
  batch `step` takes. Epochs are fresh permutations (Grain reseeds the shuffle each epoch),
  drop remainder; a pure function of (seed, shard, step)."""
  if count < batch_size:
    raise ValueError(f"{count} {what} are fewer than one batch of {batch_size}"
                     + (f" in shard {shard}" if shard else "") + f"; lower --config.{option}")
  shuffle_seed = int(np.random.SeedSequence([seed, shard]).generate_state(1)[0])
  return (grain.MapDataset.range(count).shuffle(seed=shuffle_seed)
          .batch(batch_size, drop_remainder=True).map(np.sort).repeat())


class TrainBatches:
  """The training batches of a sharded CaptionSet: batch `step` takes batch_size / shards
  examples of each shard (`index_batches`), and this process reads its own shards' part.

  `self(step)` gives this process's features (b, P, D) float32 and tokens (b, T) int32, T
  <= L cut to the bucket of the longest caption of the whole global batch (so every process
  feeds the same shape); `iterator` streams them through Grain, prefetched, with a state
  that a checkpoint keeps.
  """

  def __init__(self, data: CaptionSet, batch_size: int, seed: int, buckets: Sequence[int] = ()):
    if batch_size % len(data.shards):
      raise ValueError(f"train.batch_size ({batch_size}) must be a multiple of the number of "
                       f"data shards ({len(data.shards)}: data.shards, or one per process)")
    per = batch_size // len(data.shards)
    self.data, self.buckets = data, buckets
    self.index = [index_batches(stop - start, per, seed, k)
                  for k, (start, stop) in enumerate(data.shards)]

  def rows(self, step: int) -> list[np.ndarray]:
    """Every shard's rows of batch `step` (the global batch is their concatenation)."""
    return [start + ix[step] for (start, _), ix in zip(self.data.shards, self.index)]

  def __call__(self, step: int) -> tuple[np.ndarray, np.ndarray]:
    rows = self.rows(step)
    length = trim_to_bucket(self.data.tokens[np.concatenate(rows)], self.buckets).shape[1]
    mine = np.concatenate([rows[k] for k in self.data.local])
    return self.data.features_of(mine), self.data.tokens[mine, :length]

  def iterator(self, stop: int, state: dict | None = None) -> grain.DatasetIterator:
    """Batches 0 .. stop - 1 (from `state`, a `get_state()` of an earlier iterator, when
    given), read ahead in a background thread."""
    steps = grain.MapDataset.range(stop).map(self)
    it = iter(steps.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=4)))
    if state is not None:
      it.set_state(state)
    return it


def train_batch(data: CaptionSet, batch_size: int, seed: int, step: int,
                buckets: Sequence[int] = ()):
  """The batch for `step` (this process's part; all of it with one shard): features
  (b, P, D) float32 and tokens (b, T) int32, T <= L (see trim_to_bucket)."""
  return TrainBatches(data, batch_size, seed, buckets)(step)


def eval_batches(data: CaptionSet, batch_size: int,
                 buckets: Sequence[int] = ()) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Every example once, in order, this process's part of each global batch: process p feeds
  the next batch_size / processes examples of its shards. Short batches are padded with
  all-padding captions, which count for nothing in the masked loss."""
  processes = data.processes
  if batch_size % processes:
    raise ValueError(f"the batch size ({batch_size}) must be a multiple of the number of "
                     f"processes ({processes})")
  per = batch_size // processes
  parts = [data.process_rows(p) for p in range(processes)]
  mine = parts[data.local.start // len(data.local)]
  for start in range(0, max(len(p) for p in parts), per):
    every = np.concatenate([np.asarray(p[start:start + per]) for p in parts])
    length = trim_to_bucket(data.tokens[every], buckets).shape[1] if len(every) else 1
    rows = np.asarray(mine[start:start + per], np.int64)
    feats = data.features_of(rows)
    tokens = data.tokens[rows, :length]
    pad = per - len(rows)
    if pad:
      shape = data.features.shape[1:]
      feats = np.concatenate([feats.reshape((-1,) + shape),
                              np.zeros((pad,) + shape, np.float32)])
      tokens = np.concatenate([tokens, np.zeros((pad, length), np.int32)])
    yield feats, tokens


def validation_rows(data: CaptionSet, limit: int) -> list[np.ndarray]:
  """Per shard, the first example of each of its first images: `limit` images in all, split
  evenly over the shards (the first shards take one more), for greedy validation."""
  _, first = np.unique(data.image_index, return_index=True)
  out = []
  for (start, stop), (lo, hi) in zip(data.shards, shard_ranges(limit, len(data.shards))):
    mine = first[(first >= start) & (first < stop)]
    out.append(mine[:hi - lo])
  return out
