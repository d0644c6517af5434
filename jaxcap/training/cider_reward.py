"""CIDEr-D rewards for self-critical training, in numpy.

The reward is pycocoevalcap's CIDEr-D (`pycocoevalcap.cider.CiderScorer`: n = 1..4, clipped
tf-idf cosine, Gaussian length penalty with sigma 6, x10) with its document frequencies taken
once from a fixed corpus, the training references, as SCST implementations do. Words are the
model's own tokens (`text.normalize`), so a sampled caption is scored on the words it chose.

Everything is numpy on integer arrays: an n-gram of order k gets an id from (id of its first
k-1 words, last word), so n-grams are matched by `searchsorted` on sorted int64 keys and a
batch of candidates is scored without a Python loop over captions or n-grams.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from jaxcap.data import text

ORDER = 4  # n-grams of 1..4 words, as the COCO evaluation
SIGMA = 6.0  # the length penalty's standard deviation

SIGMA = 6.0  # the length penalty's standard deviation


def _ngram_ids(words: np.ndarray, lengths: np.ndarray, word_base: int, tables=None):
  """Per-order n-gram ids of padded word rows.

  Args:
    words: (N, L) int64 word ids (anything past a row's length is ignored).
    lengths: (N,) words per row.
    word_base: larger than every word id.
    tables: None to number the n-grams found here (returned), or a list of per-order sorted
      key arrays to look them up in (-1: not in the table).

  Returns:
    (ids (ORDER, N, L) int64, -1 where no n-gram of that order starts; the tables).
  """
  n, length = words.shape
  ids = np.full((ORDER, n, length), -1, np.int64)
  new_tables = []
  prefix = None
  for k in range(ORDER):
    m = max(length - k, 0)  # positions where an n-gram of k + 1 words can start
    valid = np.arange(m)[None, :] + k + 1 <= lengths[:, None]  # (N, m)
    last = words[:, k:k + m]
    if k == 0:
      keys = last
    else:
      # An n-gram whose first k words are unseen is unseen (prefix -1).
      valid &= prefix[:, :m] >= 0
      keys = prefix[:, :m] * word_base + last
    if tables is not None:
      # A word beyond the table's ids would alias another key: such n-grams are unseen.
      valid &= last < word_base
    found = keys[valid]
    if tables is None:
      table, index = np.unique(found, return_inverse=True)
      new_tables.append(table)
    else:
      table = tables[k]
      index = np.searchsorted(table, found)
      hit = index < len(table)
      hit[hit] = table[index[hit]] == found[hit]
      index = np.where(hit, index, -1)
    out = np.full((n, m), -1, np.int64)
    out[valid] = index
    ids[k, :, :m] = out
    prefix = out
  return ids, (new_tables if tables is None else tables)


def _pad(rows: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
  lengths = np.array([len(r) for r in rows], np.int64)
  out = np.zeros((len(rows), max(1, int(lengths.max(initial=0)))), np.int64)
  for i, r in enumerate(rows):
    out[i, :len(r)] = r
  return out, lengths


class CiderD:
  """CIDEr-D of candidates against the references of a fixed corpus of images.

  Equal to pycocoevalcap's `CiderScorer` run over the whole corpus (one candidate per image,
  document frequencies from every image's references, log(corpus size) as the idf base), for
  any candidate of any corpus image, several per image included.
  """

  def __init__(self, references: Sequence[Sequence[Sequence[int]]], sigma: float = SIGMA):
    """references[i]: image i's reference captions, each a sequence of non-negative word ids."""
    if not len(references) or any(not len(refs) for refs in references):
      raise ValueError("CiderD needs at least one image and one reference per image")
    self.sigma = sigma
    self.num_images = len(references)
    self.max_refs = max(len(refs) for refs in references)
    self.num_refs = np.array([len(refs) for refs in references], np.int64)
    ref_image = np.repeat(np.arange(self.num_images), self.num_refs)
    ref_slot = np.concatenate([np.arange(n) for n in self.num_refs])
    words, lengths = _pad([r for refs in references for r in refs])
    if words.min(initial=0) < 0:
      raise ValueError("word ids must be non-negative")
    self.word_base = int(words.max(initial=0)) + 1
    ids, self.tables = _ngram_ids(words, lengths, self.word_base)
    self.offsets = np.cumsum([0] + [len(t) for t in self.tables])  # order k: ids from offsets[k]
    num_ngrams = int(self.offsets[-1])
    self.num_ngrams = num_ngrams

    # Every n-gram occurrence as (reference, global n-gram id).
    ref_of = np.broadcast_to(np.arange(len(words))[None, :, None], ids.shape)
    valid = ids >= 0
    gid = (ids + self.offsets[:-1, None, None])[valid]
    occurrence_ref = ref_of[valid]
    # Term frequencies per (reference, n-gram).
    ref_ngram, tf = np.unique(occurrence_ref * num_ngrams + gid, return_counts=True)
    ref, g = ref_ngram // num_ngrams, ref_ngram % num_ngrams
    # Per (image, n-gram) a row of counts by reference slot: what a candidate n-gram is
    # matched against. One entry per n-gram of an image's references: the document frequency
    # is how many images' entries an n-gram has.
    self.entry_keys, entry = np.unique(ref_image[ref] * num_ngrams + g, return_inverse=True)
    df = np.bincount(self.entry_keys % num_ngrams, minlength=num_ngrams)
    self.log_corpus = np.log(float(self.num_images))
    self.weight = self.log_corpus - np.log(np.maximum(1.0, df))  # idf per n-gram
    self.entry_counts = np.zeros((len(self.entry_keys), self.max_refs),
                                 np.uint8 if tf.max() < 256 else np.int32)
    self.entry_counts[entry, ref_slot[ref]] = tf

    order = np.searchsorted(self.offsets, g, side="right") - 1
    sq = (tf * self.weight[g]) ** 2
    norms = np.sqrt(np.bincount(ref * ORDER + order, weights=sq, minlength=len(words) * ORDER))
    self.ref_norm = np.zeros((self.num_images, self.max_refs, ORDER))
    self.ref_norm[ref_image, ref_slot] = norms.reshape(len(words), ORDER)
    # pycocoevalcap's length is the number of bigrams (it counts terms where n == 1).
    self.ref_length = np.zeros((self.num_images, self.max_refs))
    self.ref_length[ref_image, ref_slot] = np.maximum(lengths - 1, 0)

  @classmethod
  def from_texts(cls, references: Sequence[Sequence[str]], vocab: text.Vocabulary, **kwargs):
    """From caption texts: words as the model writes them (`text.normalize`), vocabulary ids,
    and a distinct id beyond the vocabulary for each out-of-vocabulary word (so `[UNK]` in a
    sample matches nothing)."""
    ids = {t: i for i, t in enumerate(vocab.tokens)}
    rows = []
    for refs in references:
      rows.append([[ids.setdefault(w, len(ids)) for w in text.normalize(r).split()]
                   for r in refs])
    return cls(rows, **kwargs)

  def __call__(self, images: np.ndarray, words: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """CIDEr-D (C,) float64 of candidates `words` (C, L) int (first `lengths` (C,) are the
    caption) for corpus images `images` (C,)."""
    images = np.asarray(images, np.int64)
    words = np.asarray(words, np.int64)
    lengths = np.asarray(lengths, np.int64)
    num = len(images)
    if not num:
      return np.zeros((0,))
    # The candidates' own distinct n-grams (unseen ones included, for their norms), numbered
    # within this batch; and their ids in the corpus, looked up (-1: unseen).
    local, _ = _ngram_ids(words, lengths, max(self.word_base, int(words.max(initial=0)) + 1))
    corpus, _ = _ngram_ids(words, lengths, self.word_base, self.tables)
    valid = local >= 0
    order = np.broadcast_to(np.arange(ORDER)[:, None, None], local.shape)[valid]
    cand = np.broadcast_to(np.arange(num)[None, :, None], local.shape)[valid]
    local_id = local[valid]
    g = np.where(corpus[valid] >= 0, corpus[valid] + self.offsets[order], -1)
    span = int(local_id.max(initial=0)) + 1
    key = (cand * ORDER + order) * span + local_id
    key, first, tf = np.unique(key, return_index=True, return_counts=True)
    cand, order, g = cand[first], order[first], g[first]
    # Unseen n-grams have document frequency 0, so idf log(corpus) - log(max(1, 0)).
    vec = tf * np.where(g >= 0, self.weight[np.maximum(g, 0)], self.log_corpus)
    norm = np.sqrt(np.bincount(cand * ORDER + order, weights=vec ** 2,
                               minlength=num * ORDER)).reshape(num, ORDER)

    # Matches: each known candidate n-gram against the counts of its image's references.
    known = g >= 0
    query = images[cand[known]] * self.num_ngrams + g[known]
    pos = np.minimum(np.searchsorted(self.entry_keys, query), len(self.entry_keys) - 1)
    hit = self.entry_keys[pos] == query
    ref_vec = self.entry_counts[pos[hit]] * self.weight[g[known][hit]][:, None]  # (M, R)
    contrib = np.minimum(vec[known][hit][:, None], ref_vec) * ref_vec
    index = cand[known][hit] * ORDER + order[known][hit]
    val = np.zeros((num * ORDER, self.max_refs))
    np.add.at(val, index, contrib)
    val = val.reshape(num, ORDER, self.max_refs)
    ref_norm = self.ref_norm[images].transpose(0, 2, 1)  # (C, ORDER, R)
    denom = norm[:, :, None] * ref_norm
    val = np.where(denom != 0, val / np.where(denom != 0, denom, 1.0), val)
    delta = np.maximum(lengths - 1, 0)[:, None] - self.ref_length[images]  # (C, R)
    penalty = np.exp(-(delta ** 2) / (2 * self.sigma ** 2))
    per_ref = val.mean(axis=1) * penalty  # (C, R)
    used = np.arange(self.max_refs)[None, :] < self.num_refs[images][:, None]
    return 10.0 * np.where(used, per_ref, 0.0).sum(axis=1) / self.num_refs[images]

  def score_tokens(self, images: np.ndarray, tokens: np.ndarray, *, end_id: int,
                   drop: Sequence[int] = (text.PAD_ID,)) -> np.ndarray:
    """CIDEr-D (C,) of generated ids `tokens` (C, L): words up to the first `end_id`, without
    the ids in `drop` (padding, `<start>`: what `Vocabulary.decode` leaves out)."""
    tokens = np.asarray(tokens, np.int64)
    length = tokens.shape[1]
    before_end = np.cumsum(tokens == end_id, axis=1) == 0
    keep = before_end & ~np.isin(tokens, np.asarray(drop))
    # Move the kept words to the front of each row, in order.
    order = np.argsort(~keep, axis=1, kind="stable")
    words = np.take_along_axis(tokens, order, axis=1)
    lengths = keep.sum(axis=1)
    words = np.where(np.arange(length)[None, :] < lengths[:, None], words, 0)
    return self(images, words, lengths)
