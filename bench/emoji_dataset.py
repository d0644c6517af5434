"""A real captioned image set from Debian packages: Noto Color Emoji, named by Unicode.

    apt-get install fonts-noto-color-emoji unicode-data
    python bench/emoji_dataset.py [--out data/emoji] [--size 224]
    python train.py --config configs/emoji.py --workdir DIR

Draws every fully-qualified emoji of Unicode's `emoji-test.txt` (3,655 in Unicode 15.0) with
the Noto Color Emoji font onto a plain background, one PNG per emoji, and writes
`<out>/emoji.jsonl` in the format `configs/jsonl.py` reads:

    {"image": "images/1f44b-1f3fb.png", "caption": "waving hand: light skin tone",
     "split": "train", "group": "1f44b"}

The caption is the emoji's CLDR name from `emoji-test.txt` (jaxcap's standardisation
lower-cases it and drops punctuation). The split (about 85% train, 5% val, 10% test) is a
stable hash of the emoji's *group*, so all skin-tone and gender variants of one emoji land in
the same split; otherwise the test set would mostly hold recolourings of training images (see
`group_key`). Nothing is downloaded; the data never enters the repository.

What the set is like (Debian 12: Noto Color Emoji 2.042, Unicode 15.0): 3,655 images in
1,679 groups; 3,186 train, 178 val, 291 test images. Faces, people, animals, food, objects,
symbols and 258 flags, each on white. A few images are identical under different names (the
flags that territories share with their country, e.g. Norway and Svalbard & Jan Mayen; the
six skin tones of "snowboarder"; "family" and "family: man, man, boy"). 176 of the 291 test
captions hold a word that no training caption has ("panda", "sushi", "genie", "argentina"),
so exact match cannot pass 40% there; BLEU and CIDEr give credit for the words a model can
know ("person", "medium-dark skin tone", "flag").
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shutil
import sys
from typing import NamedTuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import PIL.features  # pylint: disable=wrong-import-position,g-import-not-at-top
import tqdm  # pylint: disable=wrong-import-position,g-import-not-at-top
from PIL import Image, ImageDraw, ImageFont  # pylint: disable=wrong-import-position

from jaxcap.data import jsonl  # pylint: disable=wrong-import-position

FONT = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
EMOJI_TEST = "/usr/share/unicode/emoji/emoji-test.txt"
PACKAGES = "fonts-noto-color-emoji unicode-data"
STRIKE = 109  # the font's only bitmap size; Pillow picks the strike by this pixel size
OUT = "data/emoji"

ZWJ, VS16 = 0x200D, 0xFE0F
SKIN_TONES = range(0x1F3FB, 0x1F400)
GENDER_SIGNS = (0x2640, 0x2642)
REGIONAL_INDICATORS = range(0x1F1E6, 0x1F200)
TAGS = range(0xE0020, 0xE0080)
PERSON, CHILD, OLDER, CROWN = 0x1F9D1, 0x1F9D2, 0x1F9D3, 0x1FAC5
# Gendered people -> the neutral form Unicode pairs them with (man -> person, girl -> child,
# Santa Claus and Mrs. Claus -> mx claus, ...), and the single-code-point pairs and families
# -> the ZWJ sequence they stand for, so that "kiss", "kiss: woman, man" and "kiss: person,
# person, light skin tone, dark skin tone" are one group.
NEUTRAL = {
    0x1F468: (PERSON,), 0x1F469: (PERSON,),  # man, woman
    0x1F466: (CHILD,), 0x1F467: (CHILD,),  # boy, girl
    0x1F474: (OLDER,), 0x1F475: (OLDER,),  # old man, old woman
    0x1F934: (CROWN,), 0x1F478: (CROWN,),  # prince, princess
    0x1F385: (PERSON, ZWJ, 0x1F384), 0x1F936: (PERSON, ZWJ, 0x1F384),  # Santa, Mrs. Claus
    0x1F57A: (0x1F483,),  # man dancing -> woman dancing (no neutral form)
    0x1F46B: (PERSON, ZWJ, 0x1F91D, ZWJ, PERSON),  # woman and man holding hands
    0x1F46C: (PERSON, ZWJ, 0x1F91D, ZWJ, PERSON),  # men holding hands
    0x1F46D: (PERSON, ZWJ, 0x1F91D, ZWJ, PERSON),  # women holding hands
    0x1F48F: (PERSON, ZWJ, 0x2764, ZWJ, 0x1F48B, ZWJ, PERSON),  # kiss
    0x1F491: (PERSON, ZWJ, 0x2764, ZWJ, PERSON),  # couple with heart
    0x1F46A: (PERSON, ZWJ, PERSON, ZWJ, CHILD),  # family (= man, woman, boy)
    0x1F91D: (0x1FAF1, ZWJ, 0x1FAF2),  # handshake (= rightwards hand, leftwards hand)
}


class Emoji(NamedTuple):
  codepoints: tuple[int, ...]
  name: str  # CLDR short name, e.g. "waving hand: light skin tone"

  @property
  def text(self) -> str:
    return "".join(map(chr, self.codepoints))

  @property
  def key(self) -> str:
    return "-".join(f"{c:x}" for c in self.codepoints)


def read_emoji_test(path: str) -> list[Emoji]:
  """The fully-qualified emoji of an `emoji-test.txt`, in its (CLDR) order."""
  out = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      # 1F44B 1F3FB ; fully-qualified # 👋🏻 E1.0 waving hand: light skin tone
      match = re.match(r"([0-9A-F ]+?)\s*;\s*fully-qualified\s*#\s*\S+\s+E\d+\.\d+\s+(.+)$",
                       line.strip())
      if match:
        out.append(Emoji(tuple(int(c, 16) for c in match[1].split()), match[2]))
  return out


def group_key(codepoints: tuple[int, ...]) -> str:
  """The emoji a sequence is a skin-tone or gender variant of, as hex code points.

  Drops skin-tone modifiers, emoji presentation selectors and ZWJ + gender sign, and maps
  gendered people to their neutral form (`NEUTRAL`): "woman gesturing NO: dark skin tone"
  (1F645 1F3FF 200D 2640 FE0F) and "person gesturing NO" (1F645) are both "1f645"; "man
  health worker" and "health worker" are both "1f9d1-200d-2695". Grouping by the name before
  the colon would not do: "man gesturing NO" and "woman gesturing NO" differ there, and all
  258 "flag: ..." emoji would be one group. Hair styles ("person: red hair") stay their own
  emoji, as do flags, keycaps and the other sequences.
  """
  out: list[int] = []
  for c in codepoints:
    if c == VS16 or c in SKIN_TONES:
      continue
    if c in GENDER_SIGNS and out and out[-1] == ZWJ:  # "... ZWJ ♀": a gendered variant
      out.pop()
      continue
    out.extend(NEUTRAL.get(c, (c,)))
  return "-".join(f"{c:x}" for c in out)


def caption_of(emoji: Emoji) -> str:
  """The CLDR name, lower-cased; keycaps spell out the two symbols punctuation removal drops."""
  name = emoji.name.replace("keycap: #", "keycap: number sign").replace("keycap: *",
                                                                          "keycap: asterisk")
  return name.lower()


def check_environment(font: str, emoji_test: str) -> None:
  """Refuses, naming the packages, when the font, the names or Pillow's raqm are missing."""
  missing = [p for p in (font, emoji_test) if not os.path.isfile(p)]
  if missing:
    raise SystemExit(f"error: {' and '.join(missing)} not found; install them with "
                     f"`apt-get install {PACKAGES}` (Debian/Ubuntu), or pass --font / "
                     "--emoji_test")
  if not PIL.features.check("raqm"):
    raise SystemExit("error: Pillow has no raqm text layout, so ZWJ sequences (families, "
                     "professions, flags) would draw as several glyphs. Pillow's wheels bundle "
                     "raqm but load FriBiDi from the system: `apt-get install libfribidi0`; a "
                     "Pillow built against the system's raqm needs `apt-get install libraqm0`.")


def draw(text: str, font: ImageFont.FreeTypeFont, size: int, background: str) -> Image.Image:
  """`text` centred on a `size` x `size` RGB square."""
  left, top, right, bottom = font.getbbox(text)
  side = max(right - left, bottom - top)
  # A square canvas with a small margin, so every emoji keeps its aspect ratio.
  canvas = Image.new("RGB", (side + side // 8,) * 2, background)
  x = (canvas.width - (right - left)) // 2 - left
  y = (canvas.height - (bottom - top)) // 2 - top
  ImageDraw.Draw(canvas).text((x, y), text, font=font, embedded_color=True)
  return canvas.resize((size, size), Image.Resampling.LANCZOS)


@functools.lru_cache(maxsize=4)
def _fallback_flags(font: ImageFont.FreeTypeFont, size: int, background: str) -> set[bytes]:
  # What the font draws for a flag it lacks: no region is "ZZ" and no subdivision "aaa".
  return {draw(text, font, size, background).tobytes() for text in (
      "\U0001F1FF\U0001F1FF", "\U0001F3F4\U000E0061\U000E0061\U000E0061\U000E007F")}


def render(emoji: Emoji, font: ImageFont.FreeTypeFont, size: int, background: str
           ) -> Image.Image | None:
  """The emoji centred on a `size` x `size` RGB square, or None if the font lacks it.

  A sequence the font lacks falls apart into several glyphs (or a tofu box plus
  components), wider than the one em of a glyph; a flag it lacks is one glyph, Noto's flag
  with a "?" (a region) or the plain black flag (a subdivision), found by comparing pixels.
  """
  if font.getlength(emoji.text) > 1.2 * font.getlength("\U0001F600"):
    return None
  image = draw(emoji.text, font, size, background)
  flag = len(emoji.codepoints) > 1 and (emoji.codepoints[0] in REGIONAL_INDICATORS
                                        or any(c in TAGS for c in emoji.codepoints))
  if flag and image.tobytes() in _fallback_flags(font, size, background):
    return None
  return image


def build(out: str, size: int = 224, font_path: str = FONT, emoji_test: str = EMOJI_TEST,
          val_fraction: float = 0.05, test_fraction: float = 0.10, limit: int = 0,
          names: str = "", background: str = "white") -> dict[str, int]:
  """Draws the emoji into `<out>/images/` and writes `<out>/emoji.jsonl`; {split: count}."""
  check_environment(font_path, emoji_test)
  emoji = read_emoji_test(emoji_test)
  if names:
    emoji = [e for e in emoji if re.search(names, e.name)]
  if limit:
    emoji = emoji[:limit]
  if not emoji:
    raise SystemExit(f"error: no emoji selected from {emoji_test}")
  font = ImageFont.truetype(font_path, STRIKE, layout_engine=ImageFont.Layout.RAQM)
  os.makedirs(os.path.join(out, "images"), exist_ok=True)
  # configs/emoji.py keeps encoder features here, keyed by image path: stale once redrawn.
  shutil.rmtree(os.path.join(out, "feature_cache"), ignore_errors=True)
  counts = dict.fromkeys(jsonl.SPLITS, 0)
  missing = []
  path = os.path.join(out, "emoji.jsonl")
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    for e in tqdm.tqdm(emoji, desc="drawing emoji", unit="img"):
      image = render(e, font, size, background)
      if image is None:
        missing.append(e.name)
        continue
      group = group_key(e.codepoints)
      split = jsonl.hashed_split(group, val_fraction, test_fraction)
      relative = f"images/{e.key}.png"
      image.save(os.path.join(out, relative))
      f.write(json.dumps({"image": relative, "caption": caption_of(e), "split": split,
                          "group": group}, ensure_ascii=False) + "\n")
      counts[split] += 1
  os.replace(path + ".tmp", path)  # a half-written file never looks like a dataset
  if missing:
    print(f"skipped {len(missing)} emoji the font lacks (several glyphs or a fallback flag): "
          f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}", file=sys.stderr)
  return counts


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", default=OUT, help=f"output folder (default {OUT})")
  parser.add_argument("--size", type=int, default=224, help="image side in pixels")
  parser.add_argument("--font", default=FONT, help="Noto Color Emoji .ttf")
  parser.add_argument("--emoji_test", default=EMOJI_TEST, help="Unicode's emoji-test.txt")
  parser.add_argument("--val_fraction", type=float, default=0.05)
  parser.add_argument("--test_fraction", type=float, default=0.10)
  parser.add_argument("--names", default="", help="only emoji whose name matches this regex")
  parser.add_argument("--limit", type=int, default=0, help="only the first N (0 = all)")
  parser.add_argument("--background", default="white", help="a Pillow colour")
  args = parser.parse_args(argv)
  counts = build(args.out, args.size, args.font, args.emoji_test, args.val_fraction,
                 args.test_fraction, args.limit, args.names, args.background)
  print(f"{sum(counts.values())} images in {os.path.join(args.out, 'emoji.jsonl')}: "
        + ", ".join(f"{n} {s}" for s, n in counts.items()))


if __name__ == "__main__":
  main()
