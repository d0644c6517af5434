"""Captioning a split with a chosen decoding, and scoring it with the COCO caption metrics."""

from __future__ import annotations

import numpy as np

from jaxcap import decoding
from jaxcap.data import pipeline, text
from jaxcap.evaluation import metrics
from jaxcap.model import decoders


def caption_set_per_image(data: pipeline.CaptionSet):
  """(first example row of each image, that image's references)."""
  _, first = np.unique(data.image_index, return_index=True)
  return first, [data.references[r] for r in first]


def evaluate(params, spec: decoders.DecoderSpec, data: pipeline.CaptionSet,
             vocab: text.Vocabulary, options: decoding.DecodeOptions, max_length: int,
             limit: int | None = None, use_java=None,
             which=metrics.ALL) -> tuple[dict, list[str]]:
  """Scores one caption per image of `data` against all its references.

  Returns (scores, candidates in image order).
  """
  rows, references = caption_set_per_image(data)
  if limit is not None:
    rows, references = rows[:limit], references[:limit]
  tokens = decoding.caption_features(
      params, spec, data.features_of(rows), options, start_id=vocab.start_id,
      end_id=vocab.end_id, max_length=max_length)
  candidates = [vocab.to_text(row) for row in tokens]
  scores = metrics.score({i: refs for i, refs in enumerate(references)},
                         {i: c for i, c in enumerate(candidates)}, use_java=use_java,
                         which=which)
  return scores, candidates


def exact_match(candidates: list[str], references: list[list[str]]) -> float:
  """Share of candidates equal to one of their references (after text normalisation)."""
  hits = sum(c in {text.normalize(r) for r in refs} for c, refs in zip(candidates, references))
  return hits / max(len(candidates), 1)
