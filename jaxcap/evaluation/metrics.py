"""The COCO caption metrics, computed by pycocoevalcap's own scorers.

BLEU-1..4, METEOR, ROUGE-L and CIDEr-D, exactly as the COCO caption evaluation computes them:
captions are PTB-tokenized and stripped of punctuation (`jaxcap.evaluation.ptb_tokenizer`), then scored
by `Bleu(4)`, `Meteor`, `Rouge` and `Cider`. `COCOEvalCap.evaluate()` is not used: it also
builds SPICE, which downloads Stanford CoreNLP and fails offline.

The PTB tokenizer and METEOR run on Java. Without a working `java`, the pure-Python tokenizer
is used and METEOR is reported as None (unavailable) rather than approximated. The COCO file
formats are read by `jaxcap.data.coco_json`.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from typing import Hashable, Mapping, Sequence

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from jaxcap.evaluation.ptb_tokenizer import java_available, tokenize

# CIDEr as COCO tables show it (88.6, not 0.886): the scale of every CIDEr a person reads
# (stored values, metrics.jsonl and TensorBoard stay pycocoevalcap's own).
CIDER_SCALE = 100

KEYS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
ALL = frozenset({"Bleu", "METEOR", "ROUGE_L", "CIDEr"})
TRAINING = frozenset({"Bleu", "CIDEr"})  # cheap, Java-free: what training logs


def _meteor(refs, cands) -> float | None:
  """pycocoevalcap's METEOR (a Java subprocess); None, with a warning, if it fails."""
  from pycocoevalcap.meteor.meteor import Meteor  # pylint: disable=g-import-not-at-top
  try:
    meteor = Meteor()
  except OSError as e:
    warnings.warn(f"METEOR unavailable: could not start java ({e})", RuntimeWarning)
    return None
  try:
    return float(meteor.compute_score(refs, cands)[0])
  except (OSError, ValueError) as e:  # the jar died: a closed pipe or an empty answer
    err = b""
    with contextlib.suppress(Exception):
      meteor.meteor_p.kill()
      err = meteor.meteor_p.stderr.read()
    detail = err.decode(errors="replace").strip().splitlines()[-1:] or [str(e)]
    warnings.warn(f"METEOR unavailable: the METEOR jar failed ({detail[0]})", RuntimeWarning)
    return None
  finally:
    # Meteor.__del__ waits for its lock, which compute_score leaves held when it fails: release
    # it so that garbage collection cannot hang, and stop the process now rather than then.
    if meteor.lock.locked():
      meteor.lock.release()
    with contextlib.suppress(Exception):
      meteor.meteor_p.kill()
      meteor.meteor_p.wait(timeout=30)
    for pipe in (meteor.meteor_p.stdin, meteor.meteor_p.stdout, meteor.meteor_p.stderr):
      with contextlib.suppress(Exception):
        pipe.close()


def _check_inputs(references, candidates):
  if not isinstance(references, Mapping) or not isinstance(candidates, Mapping):
    raise ValueError("references and candidates must be mappings: {id: [captions]} and "
                     "{id: caption}")
  no_refs = [k for k in candidates if k not in references]
  no_cand = [k for k in references if k not in candidates]
  if no_refs or no_cand:
    parts = []
    if no_refs:
      parts.append(f"no references for candidate id(s) {_show(no_refs)}")
    if no_cand:
      parts.append(f"no candidate for reference id(s) {_show(no_cand)}")
    raise ValueError("candidates and references must cover the same ids: " + "; ".join(parts))
  if not candidates:
    raise ValueError("nothing to score: no candidates")
  for k, refs in references.items():
    if isinstance(refs, str) or not isinstance(refs, Sequence):
      raise ValueError(f"references[{k!r}] must be a list of strings, not {type(refs).__name__}")
    if not refs:
      raise ValueError(f"references[{k!r}] is empty")
    if not all(isinstance(r, str) for r in refs):
      raise ValueError(f"references[{k!r}] holds a non-string")
  for k, c in candidates.items():
    if not isinstance(c, str):
      raise ValueError(f"candidates[{k!r}] must be a string, not {type(c).__name__}")


def _show(ids, limit=10) -> str:
  ids = sorted(ids, key=lambda k: (str(type(k)), str(k)))
  more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
  return ", ".join(repr(k) for k in ids[:limit]) + more


def score(references: Mapping[Hashable, Sequence[str]], candidates: Mapping[Hashable, str],
          use_java: bool | None = None, which=ALL) -> dict[str, float | None]:
  """COCO caption scores of one candidate per id against that id's references.

  Args:
    references: {id: [reference caption, ...]}.
    candidates: {id: candidate caption}; the ids must be exactly the references' ids.
    use_java: PTB tokenizer and METEOR in Java (True), the pure-Python tokenizer and no METEOR
      (False), or None: Java when it works here.
    which: a subset of ALL ("Bleu", "METEOR", "ROUGE_L", "CIDEr").

  Returns:
    {"Bleu_1".."Bleu_4", "METEOR", "ROUGE_L", "CIDEr": raw value (not x100)}; metrics not
    computed, and METEOR without Java, are None.

  Raises:
    ValueError: ids without a reference or without a candidate (named), malformed inputs.
  """
  _check_inputs(references, candidates)
  if not set(which) <= ALL:
    raise ValueError(f"which: unknown metric(s) {sorted(set(which) - ALL)}; known: {sorted(ALL)}")
  if use_java is None:
    use_java = java_available()
  refs = tokenize(references, use_java)
  cands = tokenize({k: [v] for k, v in candidates.items()}, use_java)
  out: dict[str, float | None] = dict.fromkeys(KEYS)
  with contextlib.redirect_stdout(io.StringIO()):  # Bleu prints its internals
    if "Bleu" in which:
      bleu, _ = Bleu(4).compute_score(refs, cands, verbose=0)
      out.update({f"Bleu_{n + 1}": float(v) for n, v in enumerate(bleu)})
    if "ROUGE_L" in which:
      out["ROUGE_L"] = float(Rouge().compute_score(refs, cands)[0])
    if "CIDEr" in which:
      out["CIDEr"] = float(Cider().compute_score(refs, cands)[0])
    if "METEOR" in which and use_java:
      out["METEOR"] = _meteor(refs, cands)
  return out


def format_table(scores: Mapping[str, float | None]) -> str:
  """Scores as an aligned two-column text table, x100 as papers report them; None is n/a."""
  lines = [f"{'metric':<8}  {'x100':>6}"]
  for key in KEYS:
    value = scores.get(key)
    text = "n/a" if value is None or not math.isfinite(value) else f"{100 * value:.2f}"
    lines.append(f"{key:<8}  {text:>6}")
  return "\n".join(lines)
