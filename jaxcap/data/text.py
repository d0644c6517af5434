"""Caption text: the seed's standardization and a frequency-ranked vocabulary.

The seed (Keras `TextVectorization`) wraps each caption as ``"<start> " + caption + " <end>"``,
lower-cases it, deletes every character of one punctuation class and splits on whitespace.
Ids 0 and 1 are reserved for padding ``''`` and ``[UNK]``; the rest are tokens by descending
frequency. Ties are broken alphabetically so that a vocabulary is reproducible.

A caption longer than the model's `max_length` tokens is cut to it with its `<end>` kept
(`cut`), and the vocabulary counts the tokens of the cut captions, the ones the model trains
on: one very long caption counts no more than any caption of `max_length` tokens, so it
cannot push the common words down the ranking.
"""

from __future__ import annotations

import collections
import json
import os
import re
from typing import Iterable, Sequence

import numpy as np

PAD, UNK, START, END = "", "[UNK]", "<start>", "<end>"
PAD_ID, UNK_ID = 0, 1

# The seed's class is r'[!"#$%&\(\)\*\+.,-/:;=?@\[\\\]^_`{|}~]'; inside it ",-/" is a range,
# i.e. the four characters ", - . /". "<", ">" and "'" are deliberately kept.
_PUNCTUATION = re.compile(r"[!\"#$%&()*+,\-./:;=?@\[\\\]^_`{|}~]")


def standardize(text: str) -> str:
  """Lower-cases and deletes the seed's punctuation class (`<`, `>` and `'` survive)."""
  return _PUNCTUATION.sub("", text.lower())


def normalize(caption: str) -> str:
  """A caption as the model would write it: standardized, single-spaced, no markers."""
  return " ".join(standardize(caption).split())


def wrap(caption: str) -> str:
  """Adds the seed's start and end markers."""
  return f"{START} {caption} {END}"


def tokenize(caption: str) -> list[str]:
  """Caption -> tokens, exactly as the seed feeds `TextVectorization`."""
  return standardize(wrap(caption)).split()


def cut(tokens: Sequence[str], length: int) -> list[str]:
  """The first `length` tokens; a longer caption keeps its last token (`<end>`) in place of
  its `length`-th, so the model still learns where it stops."""
  tokens = list(tokens)
  return tokens if len(tokens) <= length else tokens[:length - 1] + tokens[-1:]


class Vocabulary:
  """Token <-> id mapping. ``tokens[0] == ''`` (padding) and ``tokens[1] == '[UNK]'``."""

  def __init__(self, tokens: Sequence[str]):
    tokens = list(tokens)
    if tokens[:2] != [PAD, UNK]:
      raise ValueError(f"a vocabulary starts with {PAD!r}, {UNK!r}; got {tokens[:2]!r}")
    if len(set(tokens)) != len(tokens):
      raise ValueError("a vocabulary has no repeated tokens")
    for needed in (START, END):
      if needed not in tokens:
        raise ValueError(f"a vocabulary needs the token {needed!r}")
    self.tokens = tokens
    self._ids = {t: i for i, t in enumerate(tokens)}

  @classmethod
  def build(cls, captions: Iterable[str], max_size: int,
            max_length: int | None = None) -> "Vocabulary":
    """The `max_size` most frequent tokens (padding and `[UNK]` included) of `captions`, each
    caption cut to `max_length` tokens first (`cut`; None: whole captions)."""
    if max_size < 4:
      raise ValueError(f"max_size must leave room for padding, [UNK], <start>, <end>: {max_size}")
    counts = collections.Counter()
    for caption in captions:
      tokens = tokenize(caption)
      counts.update(tokens if max_length is None else cut(tokens, max_length))
    ranked = sorted(counts, key=lambda t: (-counts[t], t))
    return cls([PAD, UNK] + ranked[: max_size - 2])

  def __len__(self) -> int:
    return len(self.tokens)

  def __eq__(self, other) -> bool:
    return isinstance(other, Vocabulary) and self.tokens == other.tokens

  @property
  def start_id(self) -> int:
    return self._ids[START]

  @property
  def end_id(self) -> int:
    return self._ids[END]

  def id(self, token: str) -> int:
    return self._ids.get(token, UNK_ID)

  def to_ids(self, caption: str, length: int) -> np.ndarray:
    """Caption -> int32 ids (length,): wrapped, standardized, padded with 0 or cut (`<end>`
    kept)."""
    return self.encode(tokenize(caption), length)

  def encode(self, tokens: Sequence[str], length: int) -> np.ndarray:
    """`tokenize`'s tokens -> int32 ids (length,), padded with 0 or cut (`cut`)."""
    ids = [self.id(t) for t in cut(tokens, length)]
    return np.asarray(ids + [PAD_ID] * (length - len(ids)), dtype=np.int32)

  def to_ids_batch(self, captions: Sequence[str], length: int) -> np.ndarray:
    """Captions -> int32 ids (N, length)."""
    out = np.zeros((len(captions), length), dtype=np.int32)
    for row, caption in enumerate(captions):
      out[row] = self.to_ids(caption, length)
    return out

  def words(self, ids: Iterable[int]) -> list[str]:
    """Generated ids -> their tokens up to (not including) `<end>`, one per id."""
    out = []
    for i in ids:
      if int(i) == self.end_id:
        break
      out.append(self.tokens[int(i)])
    return out

  def to_text(self, ids: Iterable[int]) -> str:
    """Ids -> caption text: stops at `<end>`, drops `<start>` and padding."""
    words = []
    for i in ids:
      token = self.tokens[int(i)]
      if token == END:
        break
      if token not in (PAD, START):
        words.append(token)
    return " ".join(words)

  def to_json(self) -> str:
    return json.dumps({"tokens": self.tokens}, ensure_ascii=False)

  @classmethod
  def from_json(cls, text: str) -> "Vocabulary":
    return cls(json.loads(text)["tokens"])

  def save(self, path: str | os.PathLike) -> None:
    with open(path, "w", encoding="utf-8") as f:
      f.write(self.to_json())

  @classmethod
  def load(cls, path: str | os.PathLike) -> "Vocabulary":
    with open(path, encoding="utf-8") as f:
      return cls.from_json(f.read())
