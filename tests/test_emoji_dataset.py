"""bench/emoji_dataset.py: Noto Color Emoji named by emoji-test.txt, split by variant group.

Needs the Debian packages fonts-noto-color-emoji and unicode-data (.ci/run installs them).
"""

import collections
import json
import re

import numpy as np
import PIL.Image
import pytest
from helpers import run  # a repository script in a subprocess

from bench import emoji_dataset
from configs import emoji as emoji_config
from jaxcap.data import jsonl

# Skin-tone and gender variants (18 "gesturing NO", 6 "waving hand", the kisses), ZWJ
# sequences (families, kisses), flags (regional-indicator pairs) and keycaps.
NAMES = (r"gesturing NO|^waving hand|^flag: J|^keycap: [#*1]$|^family: man, woman, boy$|"
         r"^family$|^kiss(: woman, man|: person, person, light skin tone, dark skin tone)?$")


@pytest.fixture(scope="module")
def emoji():
  return {e.name: e for e in emoji_dataset.read_emoji_test(emoji_dataset.EMOJI_TEST)}


def test_group_key_joins_skin_tone_and_gender_variants_only(emoji):
  def group(name):
    return emoji_dataset.group_key(emoji[name].codepoints)

  assert len(emoji) > 3500  # 3,655 fully-qualified emoji in Unicode 15.0
  assert (group("person gesturing NO") == group("man gesturing NO")
          == group("woman gesturing NO: dark skin tone") == "1f645")
  assert group("health worker") == group("woman health worker: medium skin tone")
  assert group("kiss") == group("kiss: woman, man") == group(
      "kiss: person, person, light skin tone, dark skin tone")
  assert group("family") == group("family: man, woman, boy") == group("family: woman, woman, girl")
  assert group("Santa Claus") == group("Mrs. Claus: light skin tone") == group("mx claus")
  # Different emoji stay apart, even where the name before the colon is the same.
  assert group("flag: Japan") != group("flag: Jamaica")
  assert group("keycap: 1") != group("keycap: #")
  assert group("man: red hair") != group("man: curly hair") != group("man")
  assert group("female sign") != group("male sign")
  assert group("family: man, boy") != group("family: man, woman, boy")
  groups = collections.Counter(emoji_dataset.group_key(e.codepoints) for e in emoji.values())
  assert len(emoji) / 3 < len(groups) < len(emoji) / 2  # 1,679 in Unicode 15.0


def test_render_refuses_what_the_font_lacks(emoji):
  font = emoji_dataset.ImageFont.truetype(emoji_dataset.FONT, emoji_dataset.STRIKE,
                                          layout_engine=emoji_dataset.ImageFont.Layout.RAQM)

  def drawn(codepoints):
    return emoji_dataset.render(emoji_dataset.Emoji(codepoints, "?"), font, 32, "white")

  assert drawn((0x1F600, 0x1F600)) is None  # two glyphs
  assert drawn((0x1F9D1, 0x200D, 0x1F680, 0x200D, 0x1F525)) is None  # no such ZWJ sequence
  assert drawn((0x1F1FF, 0x1F1FE)) is None  # no region "ZY": Noto's "?" flag
  assert drawn((0x1F3F4, 0xE0067, 0xE0062, 0xE0078, 0xE0078, 0xE007F)) is None  # "gbxx"
  for name in ("flag: Japan", "flag: England", "black flag", "family: man, woman, boy",
               "keycap: #", "grinning face"):
    assert drawn(emoji[name].codepoints) is not None, name


@pytest.mark.slow
def test_builds_a_jsonl_image_set(emoji, tmp_path):
  out = tmp_path / "emoji"
  (out / "feature_cache" / "mobilenet_v2_224px").mkdir(parents=True)  # an earlier drawing's
  result = run(["bench/emoji_dataset.py", "--out", str(out), "--size", "64", "--names", NAMES])
  assert result.returncode == 0, result.stderr[-3000:]
  rows = [json.loads(l) for l in (out / "emoji.jsonl").read_text("utf-8").splitlines()]
  chosen = [e for e in emoji.values() if re.search(NAMES, e.name)]
  assert len(chosen) == 36  # 18 + 6 + 4 flags + 3 keycaps + 2 families + 3 kisses
  # Every one drawn (a ZWJ sequence, flag or keycap the layout split up would be skipped).
  assert [r["caption"] for r in rows] == [emoji_dataset.caption_of(e) for e in chosen]
  assert "skipped" not in result.stderr
  assert "36 images" in result.stdout
  assert not (out / "feature_cache").exists()
  by_caption = {r["caption"]: r for r in rows}
  assert by_caption["keycap: number sign"] and by_caption["waving hand: dark skin tone"]

  pixels = {}
  for r in rows:
    image = PIL.Image.open(out / r["image"])
    assert image.format == "PNG" and image.mode == "RGB" and image.size == (64, 64)
    pixels[r["caption"]] = np.asarray(image, np.float32)
    assert (pixels[r["caption"]] < 200).any()  # not a blank page
  # The skin-tone modifier is drawn, not dropped: same hand, different colour.
  assert np.abs(pixels["waving hand: light skin tone"]
                - pixels["waving hand: dark skin tone"]).mean() > 5

  # jaxcap reads it as it is, with the builder's splits.
  read = jsonl.read(str(out / "emoji.jsonl"))
  assert sum(map(len, read.values())) == 36
  # All variants of one emoji share a split: the split is the group's.
  name_of = {f"images/{e.key}.png": name for name, e in emoji.items()}
  split_of = collections.defaultdict(set)
  for r in rows:
    assert r["group"] == emoji_dataset.group_key(emoji[name_of[r["image"]]].codepoints)
    assert r["split"] == jsonl.hashed_split(r["group"], 0.05, 0.10)
    split_of[r["group"]].add(r["split"])
  assert all(len(s) == 1 for s in split_of.values())
  sizes = collections.Counter(r["group"] for r in rows)
  assert sizes["1f645"] == 18 and sizes["1f44b"] == 6  # gesturing NO, waving hand
  assert sizes[emoji_dataset.group_key(emoji["kiss"].codepoints)] == 3


def test_missing_font_names_the_packages(tmp_path):
  result = run(["bench/emoji_dataset.py", "--out", str(tmp_path), "--font", "/no/such.ttf"])
  assert result.returncode != 0
  assert "apt-get install fonts-noto-color-emoji unicode-data" in result.stderr
  assert "Traceback" not in result.stderr


def test_config_reads_the_builders_default_output():
  config = emoji_config.get_config()
  assert config.data.path == f"{emoji_dataset.OUT}/emoji.jsonl"
  assert config.data.cache_dir == f"{emoji_dataset.OUT}/feature_cache"
  assert config.data.source == "jsonl"


def test_pillow_without_raqm_says_what_to_install(monkeypatch):
  monkeypatch.setattr(emoji_dataset.PIL.features, "check", lambda feature: feature != "raqm")
  with pytest.raises(SystemExit, match="libraqm0"):
    emoji_dataset.check_environment(emoji_dataset.FONT, emoji_dataset.EMOJI_TEST)
  monkeypatch.undo()
  emoji_dataset.check_environment(emoji_dataset.FONT, emoji_dataset.EMOJI_TEST)
