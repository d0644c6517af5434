"""jaxcap's metrics against pycocoevalcap's own classes, computed live in the test."""

import contextlib
import io
import json
import os
import subprocess
import sys

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from jaxcap import metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

REFERENCES = {
    1: ["A man's dog, jumping over a fence.", "A DOG jumps over the fence!",
        "The dog doesn't stop: it's jumping...", "a black-and-white dog (leaping) outdoors"],
    2: ["Two people don't like the rain; it's pouring.", "People under umbrellas in the rain",
        "A couple walking in the rain with \"umbrellas\"."],
    3: ["There are 1,000 birds on the U.S. coast at 10:30.", "Many birds near the sea-shore",
        "A flock of birds by the ocean", "Birds, birds and more birds!"],
    4: ["A close-up of a hot-dog -- with mustard?", "A hot dog with mustard and ketchup",
        "Someone's lunch: a hot-dog.", "a hotdog on a bun"],
    5: ["The kids' toys are on the floor", "Toys scattered across a wooden floor",
        "A messy room with children's toys", "toys   on  the floor"],
    6: ["A STOP sign at a street corner.", "a red stop sign", "Stop sign next to a road",
        "A red and white [stop] sign {octagonal}"],
}
CANDIDATES = {1: "a dog is jumping over a fence", 2: "Two people walking in the rain.",
              3: "a flock of birds on the beach", 4: "A hot-dog with mustard!",
              5: "toys on the floor of a room", 6: "a stop sign on a street corner"}


def reference_scores():
  """The COCO evaluation pipeline, called directly."""
  with contextlib.redirect_stdout(io.StringIO()):
    tok = PTBTokenizer()
    gts = tok.tokenize({k: [{"caption": c} for c in v] for k, v in REFERENCES.items()})
    res = tok.tokenize({k: [{"caption": v}] for k, v in CANDIDATES.items()})
    bleu, _ = Bleu(4).compute_score(gts, res)
    out = {f"Bleu_{i + 1}": b for i, b in enumerate(bleu)}
    out["METEOR"] = Meteor().compute_score(gts, res)[0]
    out["ROUGE_L"] = Rouge().compute_score(gts, res)[0]
    out["CIDEr"] = Cider().compute_score(gts, res)[0]
  return out, gts, res


@pytest.fixture(scope="module")
def reference():
  if not metrics.java_available() and os.environ.get("JAXCAP_ALLOW_NO_JAVA") != "1":
    pytest.fail("java is needed for the reference PTB tokenizer and METEOR "
                "(set JAXCAP_ALLOW_NO_JAVA=1 to run without it)")
  return reference_scores()


def test_scores_equal_pycocoevalcap(reference):
  expected, _, _ = reference
  got = metrics.score(REFERENCES, CANDIDATES, use_java=True)
  assert set(got) == set(metrics.KEYS)
  for key in metrics.KEYS:
    assert abs(got[key] - expected[key]) < 1e-9, (key, got[key], expected[key])
  assert 0 < got["CIDEr"] < 10 and 0 < got["Bleu_4"] < 1


def test_python_tokenizer_gives_java_tokens(reference):
  _, gts, res = reference
  for k, captions in REFERENCES.items():
    assert [metrics.ptb_tokenize_python(c) for c in captions] == gts[k]
    assert metrics.ptb_tokenize_python(CANDIDATES[k]) == res[k][0]


def test_without_java_scores_match_and_meteor_is_unavailable(reference):
  expected, _, _ = reference
  got = metrics.score(REFERENCES, CANDIDATES, use_java=False)
  assert got["METEOR"] is None
  for key in ("Bleu_1", "Bleu_4", "ROUGE_L", "CIDEr"):
    assert abs(got[key] - expected[key]) < 1e-9


def test_mismatched_ids_are_named():
  with pytest.raises(ValueError, match="no candidate for \\[6\\]"):
    metrics.score(REFERENCES, {k: v for k, v in CANDIDATES.items() if k != 6}, use_java=False)


def write_fixture(tmp_path):
  annotations = {"images": [{"id": k} for k in REFERENCES],
                 "annotations": [{"image_id": k, "id": 10 * k + i, "caption": c}
                                 for k, caps in REFERENCES.items() for i, c in enumerate(caps)]}
  results = [{"image_id": k, "caption": c} for k, c in CANDIDATES.items()]
  (tmp_path / "ann.json").write_text(json.dumps(annotations))
  (tmp_path / "res.json").write_text(json.dumps(results))
  return tmp_path / "ann.json", tmp_path / "res.json"


def test_evaluate_cli_json(tmp_path, reference):
  expected, _, _ = reference
  ann, res = write_fixture(tmp_path)
  out = subprocess.run([sys.executable, "evaluate.py", "--annotations", str(ann), "--results",
                        str(res), "--json"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0, out.stderr
  scores = json.loads(out.stdout)
  for key in metrics.KEYS:
    assert abs(scores[key] - expected[key]) < 1e-9


def test_evaluate_cli_bad_results(tmp_path):
  ann, _ = write_fixture(tmp_path)
  bad = tmp_path / "bad.json"
  bad.write_text('{"not": "a list"')
  out = subprocess.run([sys.executable, "evaluate.py", "--annotations", str(ann), "--results",
                        str(bad)], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert out.returncode == 1
  assert "Traceback" not in out.stderr
  assert len(out.stderr.strip().splitlines()) == 1 and "bad.json" in out.stderr
