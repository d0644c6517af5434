import re

import numpy as np
import pytest

from jaxcap.data import text

# The seed notebook's pattern, verbatim (its ",-/" is a character range).
SEED_PATTERN = r"[!\"#$%&\(\)\*\+.,-/:;=?@\[\\\]^_`{|}~]"


@pytest.mark.parametrize("caption", [
    "A man's dog, jumping-over a fence/wall.",
    "Two <b>cats</b> [sleeping] on a {sofa}; \\ \"quoted\" ~ 100% @home #1 & more?! ^_^ `x`|y",
    "It's   a  DOG's   life...",
    "a,b-c.d/e",
])
def test_standardize_equals_seed_regex(caption):
  expected = re.sub(SEED_PATTERN, "", caption.lower())
  assert text.standardize(caption) == expected


def test_kept_characters():
  assert text.standardize("<START> Don't <END>") == "<start> don't <end>"
  assert text.tokenize("A Dog's toy, red.") == ["<start>", "a", "dog's", "toy", "red", "<end>"]


def test_vocabulary_by_frequency_with_cap():
  captions = ["a red circle", "a blue circle", "a red square", "a red circle above a blue one"]
  vocab = text.Vocabulary.build(captions, max_size=8)
  assert vocab.tokens[:2] == ["", "[UNK]"]
  assert len(vocab) == 8
  # a: 5, <start>/<end>/red: 4... ties alphabetical: <end> < <start>.
  assert vocab.tokens[2:6] == ["a", "<end>", "<start>", "circle"]
  ids = vocab.to_ids("a red one", length=7)
  assert ids.dtype == np.int32 and ids.shape == (7,)
  assert ids[0] == vocab.start_id and ids[-1] == 0
  assert vocab.id("one") == text.UNK_ID  # past the cap
  assert vocab.to_text(ids) == "a red [UNK]"


def test_to_ids_cuts_keeping_end_and_pads():
  vocab = text.Vocabulary.build(["one two three four five"], 100)
  # 7 tokens cut to 4: the model still sees where the caption stops.
  assert list(vocab.to_ids("one two three four five", 4)) == [
      vocab.start_id, vocab.id("one"), vocab.id("two"), vocab.end_id]
  assert list(vocab.to_ids("one two three four five", 7)) == [
      vocab.start_id] + [vocab.id(w) for w in "one two three four five".split()] + [vocab.end_id]
  batch = vocab.to_ids_batch(["one", "two three"], 6)
  assert batch.shape == (2, 6) and batch[0, 3] == 0 and batch[0, 2] == vocab.end_id


def test_decode_stops_at_end_and_skips_markers():
  vocab = text.Vocabulary.build(["x y"], 10)
  ids = [vocab.start_id, vocab.id("x"), vocab.end_id, vocab.id("y")]
  assert vocab.to_text(ids) == "x"


def test_json_round_trip(tmp_path):
  vocab = text.Vocabulary.build(["a caf\u00e9 scene", "a dog"], 50)
  path = tmp_path / "vocab.json"
  vocab.save(path)
  assert text.Vocabulary.load(path) == vocab


def test_bad_vocabularies_are_refused():
  with pytest.raises(ValueError, match="starts with"):
    text.Vocabulary(["a", "b", "<start>", "<end>"])
  with pytest.raises(ValueError, match="<end>"):
    text.Vocabulary(["", "[UNK]", "<start>"])
  with pytest.raises(ValueError, match="max_size"):
    text.Vocabulary.build(["a"], 3)


def test_normalize_matches_decoded_form():
  vocab = text.Vocabulary.build(["A Red  circle."], 20)
  assert vocab.to_text(vocab.to_ids("A Red  circle.", 10)) == text.normalize("A Red  circle.")


def test_one_long_caption_cannot_outrank_common_words():
  common = [f"a {colour} circle" for colour in ("red", "blue", "green")] * 10  # 30 captions
  flood = " ".join(["zebra"] * 5000)  # one caption, 5,002 tokens
  vocab = text.Vocabulary.build(common + [flood], 50, max_length=16)
  # Counted as the model sees it, cut to 16 tokens (14 zebras and <end>), it weighs what any
  # caption of 16 tokens weighs, below the words of the 30 ordinary captions...
  assert vocab.tokens[2:7] == ["<end>", "<start>", "a", "circle", "zebra"]
  assert vocab == text.Vocabulary.build(common + [" ".join(["zebra"] * 14)], 50)
  # ... where counted whole, its 5,000 zebras would rank first.
  assert text.Vocabulary.build(common + [flood], 50).tokens[2] == "zebra"


def test_vocabulary_ties_are_alphabetical_whatever_the_caption_order():
  captions = ["b a", "c d", "d c", "a b"]
  assert text.Vocabulary.build(captions, 20).tokens == \
      text.Vocabulary.build(captions[::-1], 20).tokens
  assert text.Vocabulary.build(captions, 20).tokens[2:] == \
      ["<end>", "<start>", "a", "b", "c", "d"]
