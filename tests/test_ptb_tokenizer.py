"""jaxcap.evaluation.ptb_tokenizer: the pure-Python tokenizer against pycocoevalcap's Java PTBTokenizer,
called live in the test (Java needed; see the `java` fixture in conftest.py)."""

import contextlib
import io

from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from jaxcap.evaluation import ptb_tokenizer

# More caption-like text for the tokenizer comparison (one Java run).
TRICKY = [
    "I can't believe it won't stop; they cannot go.", "We're gonna wanna see the U.S.A. today",
    "The '90s-style o'clock tower, rock 'n' roll.", "A t-shirt and an e-mail at 3 p.m. on 5/6.",
    "He paid $5 for 50% off the #1 item & more.", "A 3.5 inch, 1,000-pound, 10:30 train",
    "A caf\u00e9 na\u00efve fa\u00e7ade \u2014 with \u201cquotes\u201d and \u2018single\u2019 "
    "ones\u2026", "Mr. Smith and Dr. Jones at St. Louis, etc.", "No. 5 and no. 7 and the No.",
    "A dog (black) [white] {brown}", "A man -- who runs -- away - fast", "Really?! Yes!!! No???",
    "\"Quoted\" words and 'single quoted' words", "I'd you'll she'd they've I'm", "JOHN'S CAR "
    "ISN'T RED", "the dogs' bowls", "O'Neil and O'Brien's pub", "A 10-year-old boy and a "
    "2 1/2 inch cake", "e.g. something i.e. other", "and/or w/ w/o 24/7", "AT&T and b&w and "
    "Q&A", "\u20ac5 and \u00a35 and \u00bd", "ma'am y'all 'em 'til", "it\u2019s a dog\u2019s "
    "bone, don\u2019t", "a  photo\tof   a cat .", "", "...", "   ", "a dog., a cat; no. 5 . . .",
    # The Java tokenizer looks at the next line: "b." loses its period before "The", "No." keeps
    # it before a number; `tokenize` sees the same next line.
    "A sign with the letter b.", "The end.", "Room No.", "5 dogs", "they're here"]


def test_python_tokenizer_on_tricky_captions(java):
  del java
  captions = {i: [c] for i, c in enumerate(TRICKY)}
  with contextlib.redirect_stdout(io.StringIO()):
    expected = PTBTokenizer().tokenize({k: [{"caption": c} for c in v]
                                        for k, v in captions.items()})
  got = ptb_tokenizer.tokenize(captions, use_java=False)
  mismatches = [(TRICKY[k], expected[k][0], got[k][0]) for k in captions
                if expected[k] != got[k]]
  assert not mismatches
  spot = {c: got[k][0] for k, c in enumerate(TRICKY)}  # a few known outputs
  assert spot["I can't believe it won't stop; they cannot go."] == (
      "i ca n't believe it wo n't stop they can not go")
  assert spot["A dog (black) [white] {brown}"] == "a dog -lrb- black -rrb- -lsb- white -rsb- " \
      "-lcb- brown -rcb-"
  assert spot["Really?! Yes!!! No???"] == "really ?! yes !!! no ???"


def test_java_tokenizer_survives_line_breaks_inside_captions(java):
  # pycocoevalcap writes one caption per line and only replaces "\n": a "\r" would shift every
  # later caption onto the wrong image. jaxcap turns such characters into spaces first.
  del java
  captions = {1: ["a dog\ron a\u2028mat", "a cat\x0c"], 2: ["two birds"], 3: ["a\x0bcar"]}
  want = {1: ["a dog on a mat", "a cat"], 2: ["two birds"], 3: ["a car"]}
  assert ptb_tokenizer.tokenize(captions, use_java=True) == want
  assert ptb_tokenizer.tokenize(captions, use_java=False) == want
