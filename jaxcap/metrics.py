"""The COCO caption metrics, computed by pycocoevalcap's own scorers.

BLEU-1..4, METEOR, ROUGE-L and CIDEr-D, exactly as the COCO caption evaluation computes them:
captions are PTB-tokenized and stripped of punctuation, then scored by `Bleu(4)`, `Meteor`,
`Rouge` and `Cider`. `COCOEvalCap.evaluate()` is not used: it also builds SPICE, which
downloads Stanford CoreNLP and fails offline.

The PTB tokenizer and METEOR run on Java. Without `java`, a pure-Python tokenizer that gives
the Java tokenizer's tokens on ordinary caption text is used, and METEOR is reported as None
(unavailable) rather than approximated.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
from typing import Hashable, Mapping, Sequence

from jaxcap.data import read_json
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS, PTBTokenizer

KEYS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
ALL = frozenset({"Bleu", "METEOR", "ROUGE_L", "CIDEr"})
TRAINING = frozenset({"Bleu", "CIDEr"})  # cheap, Java-free: what training logs

_PUNCTUATION_TOKENS = frozenset(PUNCTUATIONS)
# Stanford PTBTokenizer's output on caption text, as pycocoevalcap runs it (-lowerCase):
# contractions split off ("don't" -> "do n't", "dog's" -> "dog 's"), words with inner
# hyphens, slashes or apostrophes kept whole ("black-and-white", "o'clock"), brackets
# become "-lrb-" etc. (lower-case, so pycocoevalcap's upper-case list does not drop them),
# and runs of "!" or "?" stay one token.
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
_ABBREVIATIONS = ("mr.", "mrs.", "ms.", "dr.", "st.", "jr.", "sr.", "vs.", "etc.", "inc.",
                  "co.", "no.", "mt.", "ft.", "jan.", "feb.", "aug.", "sept.", "oct.", "nov.",
                  "dec.")
_CLITICS = re.compile(r"^(.+?)(n't|'s|'re|'ve|'ll|'m|'d)$")
_TOKEN = re.compile(
    r"""(?x)
      'n'                                   # rock 'n' roll
    | \.\.\. | -- | [!?]+
    | \d+(?:[.,:/]\d+)+                      # 1,000  3.5  10:30  1/2
    | (?:[a-z]\.){2,}                        # u.s.  a.m.
    | (?:""" + "|".join(re.escape(a) for a in _ABBREVIATIONS) + r""")(?!\w)
    | [\w&]+(?:[-/'.][\w&]+)*                # words, inner - / ' . kept
    | '(?:s|re|ve|ll|m|d)\b                  # a detached 's
    | \S                                     # any other symbol
    """)


@contextlib.contextmanager
def _quiet_stderr():
  """Silences the Java tokenizer's progress line, which it writes to the inherited stderr."""
  saved = os.dup(2)
  try:
    with open(os.devnull, "w") as devnull:
      os.dup2(devnull.fileno(), 2)
      yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)


def java_available() -> bool:
  return shutil.which("java") is not None


def ptb_tokenize_python(text: str) -> str:
  """One caption -> the space-joined tokens pycocoevalcap's PTBTokenizer would keep."""
  tokens = []
  for token in _TOKEN.findall(text.lower()):
    match = _CLITICS.match(token)
    if match and "'" not in match.group(1):
      tokens.extend(match.groups())
    elif token in ('"', "`"):
      continue  # PTB turns quotes into `` and '', which pycocoevalcap drops
    else:
      tokens.append(_BRACKETS.get(token, token))
  return " ".join(t for t in tokens if t not in _PUNCTUATION_TOKENS)


def tokenize(captions: Mapping[Hashable, Sequence[str]], use_java: bool | None = None
             ) -> dict[Hashable, list[str]]:
  """{id: [caption, ...]} -> {id: [tokenized caption, ...]}, punctuation removed."""
  if use_java is None:
    use_java = java_available()
  if use_java:
    with contextlib.redirect_stdout(io.StringIO()), _quiet_stderr():
      return PTBTokenizer().tokenize(
          {k: [{"caption": c} for c in v] for k, v in captions.items()})
  return {k: [ptb_tokenize_python(c) for c in v] for k, v in captions.items()}


def score(references: Mapping[Hashable, Sequence[str]], candidates: Mapping[Hashable, str],
          use_java: bool | None = None, which=ALL) -> dict[str, float | None]:
  """COCO caption scores of one candidate per id against that id's references.

  Args:
    references: {id: [reference caption, ...]}.
    candidates: {id: candidate caption}; the ids must be exactly the references' ids.
    use_java: PTB tokenizer and METEOR in Java (None: when `java` is on PATH).
    which: a subset of ALL ("Bleu", "METEOR", "ROUGE_L", "CIDEr").

  Returns:
    {"Bleu_1".."Bleu_4", "METEOR", "ROUGE_L", "CIDEr": raw value (not x100)}; metrics not
    computed, or METEOR without Java, are None.
  """
  missing_refs = set(candidates) - set(references)
  missing_cands = set(references) - set(candidates)
  if missing_refs or missing_cands:
    raise ValueError(
        "candidates and references must cover the same ids; "
        + (f"no references for {sorted(missing_refs, key=str)[:10]} " if missing_refs else "")
        + (f"no candidate for {sorted(missing_cands, key=str)[:10]}" if missing_cands else ""))
  if not candidates:
    raise ValueError("nothing to score")
  if use_java is None:
    use_java = java_available()
  refs = tokenize(references, use_java)
  cands = tokenize({k: [v] for k, v in candidates.items()}, use_java)
  out: dict[str, float | None] = dict.fromkeys(KEYS)
  with contextlib.redirect_stdout(io.StringIO()):  # Bleu prints its internals
    if "Bleu" in which:
      bleu, _ = Bleu(4).compute_score(refs, cands)
      out.update({f"Bleu_{n + 1}": float(v) for n, v in enumerate(bleu)})
    if "ROUGE_L" in which:
      out["ROUGE_L"] = float(Rouge().compute_score(refs, cands)[0])
    if "CIDEr" in which:
      out["CIDEr"] = float(Cider().compute_score(refs, cands)[0])
    if "METEOR" in which and use_java:
      from pycocoevalcap.meteor.meteor import Meteor  # pylint: disable=g-import-not-at-top
      meteor = Meteor()
      try:
        out["METEOR"] = float(meteor.compute_score(refs, cands)[0])
      finally:
        with contextlib.suppress(Exception):
          meteor.close()
  return out


def load_coco_annotations(path: str | os.PathLike) -> dict[int, list[str]]:
  """COCO caption annotations ({"annotations": [{"image_id", "caption"}]}) -> {id: [caption]}."""
  data = read_json(path, "annotations")
  if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
    raise ValueError(f"{path}: not COCO caption annotations (no 'annotations' list)")
  out: dict[int, list[str]] = {}
  for i, ann in enumerate(data["annotations"]):
    if not isinstance(ann, dict) or "image_id" not in ann or not isinstance(
        ann.get("caption"), str):
      raise ValueError(f"{path}: annotation {i} lacks an image_id or a caption string")
    out.setdefault(ann["image_id"], []).append(ann["caption"])
  return out


def load_coco_results(path: str | os.PathLike) -> dict[int, str]:
  """COCO results ([{"image_id", "caption"}]) -> {id: caption}. An id listed twice is an
  error, as the COCO tools refuse it too."""
  data = read_json(path, "results")
  if not isinstance(data, list):
    raise ValueError(f"{path}: COCO results are a JSON list of {{image_id, caption}}")
  out: dict[int, str] = {}
  for i, row in enumerate(data):
    if not isinstance(row, dict) or "image_id" not in row or not isinstance(
        row.get("caption"), str):
      raise ValueError(f"{path}: result {i} lacks an image_id or a caption string")
    if row["image_id"] in out:
      raise ValueError(f"{path}: image_id {row['image_id']} has more than one result")
    out[row["image_id"]] = row["caption"]
  return out


def format_table(scores: Mapping[str, float | None]) -> str:
  """Scores as a two-column text table, x100 as papers report them."""
  lines = [f"{'metric':<8} {'x100':>7}"]
  for key in KEYS:
    value = scores.get(key)
    lines.append(f"{key:<8} {'n/a':>7}" if value is None else f"{key:<8} {value * 100:7.2f}")
  return "\n".join(lines)
