"""jaxcap.evaluation.metrics and evaluate.py against pycocoevalcap's own classes, called live in the test.

Java (the PTB tokenizer and METEOR) is needed: without it these tests fail, unless
JAXCAP_ALLOW_NO_JAVA=1, which skips the comparisons that need it (the `java` fixture in
conftest.py).
"""

import contextlib
import io
import json
import os
import stat
import subprocess
import sys
import warnings

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from jaxcap.evaluation import metrics, ptb_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Six images, 3-5 references each (CIDEr's IDF is computed over the evaluated set), with
# capitals, punctuation, contractions, possessives, hyphens, brackets, quotes, numbers,
# abbreviations, unicode quotes and dashes, trailing periods and runs of spaces.
REFERENCES = {
    1: ["A man's dog, jumping over a fence.", "A DOG jumps over the fence!",
        "The dog doesn't stop: it's jumping...", "a black-and-white dog (leaping) outdoors",
        "A dog [mid-air] over a wooden   fence ."],
    2: ["Two people don't like the rain; it's pouring.", "People under umbrellas in the rain",
        "A couple walking in the rain with \"umbrellas\".", "They're walking in the rain -- "
        "it isn't stopping."],
    3: ["There are 1,000 birds on the U.S. coast at 10:30.", "Many birds near the sea-shore",
        "A flock of birds by the ocean", "Birds, birds and more birds!",
        "About 3.5 dozen gulls ... on Mr. Smith's beach"],
    4: ["A close-up of a hot-dog -- with mustard?", "A hot dog with mustard and ketchup",
        "Someone's lunch: a hot-dog.", "a hotdog on a bun", "A 12-inch hot dog, 1/2 eaten."],
    5: ["The kids' toys are on the floor", "Toys scattered across a wooden floor",
        "A messy room with children's toys", "toys   on  the floor"],
    6: ["A STOP sign at a street corner.", "a red stop sign", "Stop sign next to a road",
        "A red and white [stop] sign {octagonal}", "A \u201cSTOP\u201d sign \u2014 it\u2019s red."],
}
CANDIDATES = {1: "a dog is jumping over a fence", 2: "Two people walking in the rain.",
              3: "a flock of birds on the beach", 4: "A hot-dog with mustard!",
              5: "toys on the floor of a room", 6: "a stop sign on a street corner"}

@pytest.fixture(scope="module")
def reference(java):
  """The COCO caption evaluation, done with pycocoevalcap's classes directly."""
  del java
  with contextlib.redirect_stdout(io.StringIO()):
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({k: [{"caption": c} for c in v] for k, v in REFERENCES.items()})
    res = tokenizer.tokenize({k: [{"caption": v}] for k, v in CANDIDATES.items()})
    bleu, _ = Bleu(4).compute_score(gts, res)
    scores = {f"Bleu_{i + 1}": b for i, b in enumerate(bleu)}
    scores["METEOR"] = Meteor().compute_score(gts, res)[0]
    scores["ROUGE_L"] = Rouge().compute_score(gts, res)[0]
    scores["CIDEr"] = Cider().compute_score(gts, res)[0]
  return scores, gts, res


def assert_scores_equal(got, expected, keys=metrics.KEYS):
  for key in keys:
    assert abs(got[key] - expected[key]) < 1e-9, (key, got[key], expected[key])


@pytest.mark.slow
def test_scores_equal_pycocoevalcap(reference, capsys):
  expected, _, _ = reference
  got = metrics.score(REFERENCES, CANDIDATES, use_java=True)
  assert list(got) == list(metrics.KEYS)
  assert_scores_equal(got, expected)
  assert 0 < got["CIDEr"] < 10 and 0 < got["Bleu_4"] < 1 and 0 < got["METEOR"] < 1
  assert capsys.readouterr().out == ""  # pycocoevalcap's prints are silenced


@pytest.mark.slow
def test_python_tokenizer_gives_java_tokens(reference):
  _, gts, res = reference
  for k, captions in REFERENCES.items():
    assert [ptb_tokenizer.tokenize_python(c) for c in captions] == gts[k]
    assert ptb_tokenizer.tokenize_python(CANDIDATES[k]) == res[k][0]
  assert ptb_tokenizer.tokenize(REFERENCES, use_java=False) == gts


@pytest.mark.slow
def test_without_java_scores_match_and_meteor_is_unavailable(reference):
  expected, _, _ = reference
  got = metrics.score(REFERENCES, CANDIDATES, use_java=False)
  assert got["METEOR"] is None
  assert_scores_equal(got, expected, [k for k in metrics.KEYS if k != "METEOR"])


def test_no_java_on_path_is_handled(tmp_path, monkeypatch):
  empty = tmp_path / "empty"
  empty.mkdir()
  broken = tmp_path / "broken"  # a `java` that runs but fails, like macOS's stub
  broken.mkdir()
  (broken / "java").write_text("#!/bin/sh\necho 'no Java runtime' >&2\nexit 1\n")
  (broken / "java").chmod(stat.S_IRWXU)
  for path in (empty, broken):
    monkeypatch.setenv("PATH", str(path))
    assert not metrics.java_available()
    got = metrics.score(REFERENCES, CANDIDATES)  # use_java=None: falls back, no crash
    assert got["METEOR"] is None and got["CIDEr"] > 0
    with pytest.raises(RuntimeError, match="no working `java`"):
      metrics.score(REFERENCES, CANDIDATES, use_java=True)


def test_failing_meteor_jar_gives_none_and_a_warning(java, monkeypatch):
  del java
  import pycocoevalcap.meteor.meteor as meteor_module  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(meteor_module, "METEOR_JAR", "no-such-meteor.jar")
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    got = metrics.score({1: ["a dog"], 2: ["a cat"]}, {1: "a dog", 2: "a cat"},
                        use_java=True)
  assert got["METEOR"] is None and got["Bleu_1"] > 0.99
  assert any("METEOR unavailable" in str(w.message) for w in caught)


def test_mismatched_ids_are_named():
  with pytest.raises(ValueError, match=r"no candidate for reference id\(s\) 6"):
    metrics.score(REFERENCES, {k: v for k, v in CANDIDATES.items() if k != 6}, use_java=False)
  with pytest.raises(ValueError, match=r"no references for candidate id\(s\) 7"):
    metrics.score(REFERENCES, {**CANDIDATES, 7: "a cat"}, use_java=False)
  with pytest.raises(ValueError, match="must be a list of strings"):
    metrics.score({1: "a dog"}, {1: "a dog"}, use_java=False)
  with pytest.raises(ValueError, match="is empty"):
    metrics.score({1: []}, {1: "a dog"}, use_java=False)
  with pytest.raises(ValueError, match="must be a string"):
    metrics.score({1: ["a dog"]}, {1: ["a dog"]}, use_java=False)
  with pytest.raises(ValueError, match="nothing to score"):
    metrics.score({}, {}, use_java=False)


def test_which_computes_a_subset():
  got = metrics.score(REFERENCES, CANDIDATES, use_java=False, which=metrics.TRAINING)
  assert got["ROUGE_L"] is None and got["METEOR"] is None
  assert got["Bleu_4"] is not None and got["CIDEr"] is not None


def write_fixture(tmp_path):
  annotations = {"images": [{"id": k} for k in REFERENCES],
                 "annotations": [{"image_id": k, "id": 10 * k + i, "caption": c}
                                 for k, caps in REFERENCES.items() for i, c in enumerate(caps)]}
  results = [{"image_id": k, "caption": c} for k, c in CANDIDATES.items()]
  (tmp_path / "ann.json").write_text(json.dumps(annotations))
  (tmp_path / "res.json").write_text(json.dumps(results))
  return tmp_path / "ann.json", tmp_path / "res.json"


def test_format_table():
  table = metrics.format_table({**dict.fromkeys(metrics.KEYS, 0.5), "METEOR": None})
  lines = table.splitlines()
  assert "x100" in lines[0] and len({len(line) for line in lines}) == 1
  assert [line.split()[0] for line in lines[1:]] == list(metrics.KEYS)
  assert "50.00" in lines[1] and lines[5].split()[1] == "n/a"


def run_cli(*args):
  return subprocess.run([sys.executable, "evaluate.py", *map(str, args)], cwd=ROOT,
                        capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_evaluate_cli_json(tmp_path, reference):
  expected, _, _ = reference
  ann, res = write_fixture(tmp_path)
  out = run_cli("--annotations", ann, "--results", res, "--json")
  assert out.returncode == 0, out.stderr
  scores = json.loads(out.stdout)
  assert list(scores) == list(metrics.KEYS)
  assert_scores_equal(scores, expected)


def test_evaluate_cli_table_without_java(tmp_path):
  ann, res = write_fixture(tmp_path)
  out = run_cli("--annotations", ann, "--results", res, "--no_java")
  assert out.returncode == 0, out.stderr
  assert "x100" in out.stdout and "n/a" in out.stdout and "CIDEr" in out.stdout


@pytest.mark.parametrize("content,message", [
    ('{"not": "a list"', "not valid JSON"),
    ('{"image_id": 1, "caption": "a"}', "expected a JSON list"),
    ('[{"image_id": 1, "caption": "a"}, {"image_id": 1, "caption": "b"}]', "more than one"),
    ('[{"image_id": 99, "caption": "a"}]', "not in"),
    ('[{"image_id": "1", "caption": "a"}]', "types differ"),
])
def test_evaluate_cli_bad_results(tmp_path, content, message):
  ann, _ = write_fixture(tmp_path)
  bad = tmp_path / "bad.json"
  bad.write_text(content)
  out = run_cli("--annotations", ann, "--results", bad, "--no_java")
  assert out.returncode == 1 and out.stdout == ""
  assert "Traceback" not in out.stderr
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and "bad.json" in lines[0] and message in lines[0], out.stderr


def test_evaluate_cli_missing_file(tmp_path):
  _, res = write_fixture(tmp_path)
  out = run_cli("--annotations", tmp_path / "nope.json", "--results", res, "--no_java")
  assert out.returncode == 1 and "Traceback" not in out.stderr
  assert len(out.stderr.strip().splitlines()) == 1 and "nope.json" in out.stderr


@pytest.mark.parametrize("limit", ["-1", "0"])
def test_evaluate_cli_rejects_a_limit_below_one(tmp_path, limit):
  # --limit -1 once sliced keys[:-1], silently dropping the last image.
  out = run_cli("--workdir", tmp_path, "--limit", limit)
  assert out.returncode == 2 and "Traceback" not in out.stderr
  assert f"--limit must be >= 1 (the number of images to score), not {limit}" in out.stderr
