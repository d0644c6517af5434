"""Captioning a split with a chosen decoding, and scoring it with the COCO caption metrics."""

from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np

from jaxcap import beam, generate, metrics, text
from jaxcap.data import pipeline


@dataclasses.dataclass(frozen=True)
class Decoding:
  """How to pick words: greedy, beam search (beam_size > 1) or top-k sampling."""
  mode: str = "greedy"  # "greedy" | "beam" | "sample"
  beam_size: int = 3
  alpha: float = 0.0  # beam length penalty
  top_k: int = 10
  temperature: float = 1.0
  seed: int = 0

  def __post_init__(self):
    if self.mode not in ("greedy", "beam", "sample"):
      raise ValueError(f"decoding mode must be greedy, beam or sample, not {self.mode!r}")

  def describe(self) -> str:
    if self.mode == "beam":
      return f"beam {self.beam_size}" + (f" (alpha {self.alpha})" if self.alpha else "")
    if self.mode == "sample":
      return f"top-{self.top_k} sampling, temperature {self.temperature}"
    return "greedy"


@functools.lru_cache(maxsize=16)
def _decoder_fn(decoding: Decoding, start_id: int, end_id: int, max_length: int):
  """A jitted features (B, P, D) -> best tokens (B, L) for `decoding`."""
  if decoding.mode == "beam":
    def run(params, features, key):
      del key
      tokens, _, _ = beam.beam_search(params, features, start_id=start_id, end_id=end_id,
                                      max_length=max_length, beam_size=decoding.beam_size,
                                      alpha=decoding.alpha)
      return tokens[:, 0]
  else:
    def run(params, features, key):
      tokens, _ = generate.generate(
          params, features, key, start_id=start_id, end_id=end_id, max_length=max_length,
          greedy=decoding.mode == "greedy", top_k=decoding.top_k,
          temperature=decoding.temperature)
      return tokens
  return jax.jit(run)


def caption_features(params, features, vocab: text.Vocabulary, decoding: Decoding,
                     max_length: int, batch_size: int = 128) -> list[str]:
  """Captions for features (N, P, D) (array-like), in batches of a fixed shape."""
  run = _decoder_fn(decoding, vocab.start_id, vocab.end_id, max_length)
  key = jax.random.key(decoding.seed)
  out = []
  for start in range(0, len(features), batch_size):
    chunk = np.asarray(features[start:start + batch_size], np.float32)
    n = len(chunk)
    if n < batch_size:
      chunk = np.concatenate([chunk, np.zeros((batch_size - n,) + chunk.shape[1:], np.float32)])
    tokens = np.asarray(run(params, chunk, jax.random.fold_in(key, start)))[:n]
    out.extend(vocab.decode(row) for row in tokens)
  return out


def caption_set_per_image(data: pipeline.CaptionSet):
  """(first example row of each image, that image's references)."""
  _, first = np.unique(data.image_index, return_index=True)
  return first, [data.references[r] for r in first]


def evaluate(params, data: pipeline.CaptionSet, vocab: text.Vocabulary, decoding: Decoding,
             max_length: int, limit: int | None = None, use_java=None,
             which=metrics.ALL) -> tuple[dict, list[str]]:
  """Scores one caption per image of `data` against all its references.

  Returns (scores, candidates in image order).
  """
  rows, references = caption_set_per_image(data)
  if limit is not None:
    rows, references = rows[:limit], references[:limit]
  features = data.features_of(rows)
  candidates = caption_features(params, features, vocab, decoding, max_length)
  scores = metrics.score({i: refs for i, refs in enumerate(references)},
                         {i: c for i, c in enumerate(candidates)}, use_java=use_java,
                         which=which)
  return scores, candidates
