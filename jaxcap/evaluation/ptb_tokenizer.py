"""The PTB tokenizer of the COCO caption evaluation: pycocoevalcap's (Java) or a pure-Python one.

pycocoevalcap lower-cases and tokenizes every caption with Stanford's PTBTokenizer (a Java
subprocess), then drops punctuation tokens. Without a working `java`, `tokenize` uses the
pure-Python tokenizer below, which gives the Java tokenizer's tokens on caption text.
`java_available` says which one runs (METEOR needs Java too).
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import shutil
import subprocess
import sys
from typing import Hashable, Mapping, Sequence

from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS, PTBTokenizer

# --------------------------------------------------------------------------------------------
# Java


@functools.lru_cache(maxsize=None)
def _java_works(path: str) -> bool:
  try:
    return subprocess.run([path, "-version"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, timeout=60).returncode == 0
  except (OSError, subprocess.SubprocessError):
    return False


def java_available() -> bool:
  """Whether a `java` on PATH runs (`java -version` succeeds; a stub such as macOS's
  /usr/bin/java without a JDK does not count)."""
  path = shutil.which("java")
  return path is not None and _java_works(os.path.realpath(path))


@contextlib.contextmanager
def _quiet_stderr():
  """Silences the Java tokenizer's progress line, which it writes to the inherited stderr."""
  try:
    sys.stderr.flush()
    saved = os.dup(2)
  except (OSError, ValueError, AttributeError):  # no usable stderr: nothing to silence
    yield
    return
  try:
    with open(os.devnull, "w") as devnull:
      os.dup2(devnull.fileno(), 2)
      yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)


# Characters the Java tokenizer reads as a line break. pycocoevalcap writes one caption per line
# and only replaces "\n", so one of these inside a caption shifts every later caption onto the
# wrong image. As spaces they separate tokens exactly as they would within a line.
_LINE_BREAKS = re.compile("[\r\x0b\x0c\x85\u2028\u2029]")


def _tokenize_java(captions: Mapping[Hashable, Sequence[str]]) -> dict[Hashable, list[str]]:
  flat = {k: [{"caption": _LINE_BREAKS.sub(" ", c)} for c in v] for k, v in captions.items()}
  try:
    with contextlib.redirect_stdout(io.StringIO()), _quiet_stderr():
      out = PTBTokenizer().tokenize(flat)
  except OSError as e:  # e.g. pycocoevalcap's folder (where it writes its temp file) read-only
    raise RuntimeError(f"the Java PTB tokenizer could not run: {e}") from e
  out = {k: out.get(k, []) for k in captions}  # in the input's order, empty lists kept
  for k, v in captions.items():
    if len(out[k]) != len(v):
      raise RuntimeError("the Java PTB tokenizer returned fewer lines than captions "
                         f"(first short id: {k!r}); is java working?")
  return out


# --------------------------------------------------------------------------------------------
# Pure-Python PTB tokenizer
#
# What Stanford's PTBTokenizer (CoreNLP 3.4.1, as pycocoevalcap runs it: -preserveLines
# -lowerCase) does with caption text, written from its observed output (not from its source).
# It is a longest-match lexer: at each position every rule below is tried, the longest match
# wins and a tie goes to the earlier rule; some rules count a look-ahead in their length but
# emit only the part before it ("do" of "don't"). Tokens are lower-cased at the end, and
# pycocoevalcap then drops the tokens in PUNCTUATIONS. The main behaviours:
#   - clitics split off: "don't" -> do n't, "can't" -> ca n't, "dog's" -> dog 's, "we're" ->
#     we 're; "cannot", "gonna", "gotta", "wanna", "lemme", "gimme" split in two;
#   - words keep inner hyphens, dots, "!" and "?" ("black-and-white", "u.s.-made",
#     "www.x.com"), up to three "/"-parts ("and/or", "a/b/c"), upper-case "&" ("AT&T" but
#     "b & w"), a few apostrophes ("o'clock", "rock 'n' roll", "'90s", "ma'am");
#   - a period stays on known abbreviations ("mr.", "st.", "etc.", "u.s.", single letters "j.")
#     and on a word right before "," ";" ":" ("dog.," -> dog. ,), and is split off otherwise;
#   - numbers keep ".,:" ("1,000", "3.5", "10:30", ".45"), a sign ("-5") and fractions
#     ("1/2", "2 1/2" as one token joined by a no-break space);
#   - brackets become -lrb- -rrb- -lsb- -rsb- -lcb- -rcb- (lower-cased, so pycocoevalcap's
#     upper-case PUNCTUATIONS list does not drop them); quotes become `` '' ` ' and dashes -- ;
#     runs of "!"/"?" ("?!", "!!!"), "*" and "#" stay one token;
#   - "€" -> $, "£" -> #, "¢" -> cents, "½" -> 1/2; format characters and emoji are deleted.
# pycocoevalcap tokenizes all captions in one Java run, one per line, and a few rules look past
# the end of a line: "no." keeps its period when the next caption starts with a number, "b."
# loses it when the next one starts with "The", and the last caption (no newline after it)
# splits "you'll" as you ' ll. `tokenize` follows that.
# Checked against the Java tokenizer on 100,000 generated caption-like lines (all equal) and on
# text with words glued together by punctuation (about 1% of lines differ). Not covered: URLs
# and e-mail addresses beyond simple forms, emoticons, SGML tags with attributes, characters of
# non-Latin scripts (which Java 3.4.1 partly deletes) and abbreviations not in the list below.


_DELETED_RANGES = (  # characters the Java tokenizer drops (General Punctuation and beyond)
    (0x2010, 0x2012), (0x2024, 0x2025), (0x2027, 0x2027), (0x203C, 0x203D), (0x2043, 0x2043),
    (0x2045, 0x205E), (0x20A1, 0x20A3), (0x20A5, 0x20AB), (0x20AD, 0x20CF), (0x20D0, 0x20FF),
    (0x2150, 0x2152), (0x215F, 0x218F), (0x2E00, 0x2FFF))


def _deleted(ch: str) -> bool:
  cp = ord(ch)
  return cp > 0xFFFF or any(a <= cp <= b for a, b in _DELETED_RANGES)


# Python's \w also takes these numerals (superscripts, fractions, roman and circled numbers),
# which the Java tokenizer keeps apart as symbols; combining accents it joins to a word.
_NUMERALS = "\u00b2\u00b3\u00b9\u00bc-\u00be\u2070-\u209f\u2150-\u218f\u2460-\u24ff\u2776-\u2793"
_MARKS = "\u0300-\u036f\u1dc0-\u1dff\ufe20-\ufe2f"
_L = rf"(?:[^\W\d_{_NUMERALS}]|[{_MARKS}])"  # a letter
_W = rf"(?:[^\W_{_NUMERALS}]|[{_MARKS}])"  # a word character: a letter or a decimal digit
_WC = rf"{_W}+(?:_+{_W}+)*"  # inner underscores join
# "www.x.com", "hello!world" (joined when the word starts with a letter), "7am", "x_y"
_WORD = rf"{_L}{_W}*(?:_+{_W}+)*(?:[.!?](?={_L}){_WC})*|\d{_W}*(?:_+{_W}+)*"
_LATIN_LETTER = "A-Za-z\u00aa\u00b5\u00ba\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u00ff"
_APOS = "['\u2019]"
_CLITIC_BODY = "(?:[sSdDmM]|[rR][eE]|[vV][eE]|[lL][lL])"
# After a straight apostrophe a clitic must not run on into an ASCII letter ("it'sa" -> it ' sa,
# but "'São" -> 's ão), and 're 've 'll need a character after them (not the end of the text);
# after a curly apostrophe neither holds.
_CLITIC = (rf"'(?:[sSdDmM](?![A-Za-z])|(?:[rR][eE]|[vV][eE]|[lL][lL])(?=[^A-Za-z]))"
           rf"|\u2019{_CLITIC_BODY}")
_SPLIT_WORDS = {"cannot": ("can", "not"), "gonna": ("gon", "na"), "gotta": ("got", "ta"),
                "wanna": ("wan", "na"), "lemme": ("lem", "me"), "gimme": ("gim", "me")}

# Abbreviations that keep their period, as the Java tokenizer treats them (by probing it).
_ABBREVIATIONS = (
    "adj adm adv al apr ariz assn assoc asst atty attys aug ave bancorp bhd bldg blvd brig bros "
    "calif capt cf cie cmdr co col colo conn corp cos cpl ct dak dec dept det dr ens esq est etc "
    "ext feb fla fri ft ga gen gov hon inc ind insp intl jan jr jul jun kan kans ky lieut lt ltd "
    "maj mar md messrs mich minn mlle mme mo mon mont mr mrs ms msgr mt natl neb nev nov oct okla "
    "penn pfc plc pres prof pvt rd rep rev rt sen sep sept sfc sgt spc sq sr st ste supt tel tenn "
    "thu thurs tue tues univ v va vs vt wed wis wisc wm wyo").split()
_ABBREVIATIONS_CAPITALIZED = "ark del ill la mass miss ore pa tex wash".split()  # "Mass." only
_ABBREVIATIONS_NOT_UPPER = "mfg pty".split()  # "mfg." and "Mfg." but not "MFG."
# Words after which a single letter's period ends a sentence ("plan b. The ..."), by probing.
_STARTERS = "|".join(sorted((
    "A About After An As At But He Her Here However If In It Many More Now One Other Our She Since "
    "So Some Such That The Their Then There These They This We What When While Yet You").split(),
    key=lambda w: (-len(w), w)))
_ABBREVIATIONS_BEFORE_NUMBER = "art ca fig no nos op pp".split()  # "no. 5" but "no ."


def _alternatives(words) -> str:
  return "|".join(sorted(words, key=lambda w: (-len(w), w)))


_CAPITALIZED = _alternatives(f"{w[0].upper()}(?i:{w[1:]})" for w in _ABBREVIATIONS_CAPITALIZED)
_NOT_UPPER = _alternatives(w for v in _ABBREVIATIONS_NOT_UPPER for w in (v, v.title()))
_ABBREVIATION = rf"(?i:(?:{_alternatives(_ABBREVIATIONS)})\.)|(?:[A-Za-z]\.)+"
_APO_LETTER = rf"(?:[A-HJ-XZ]|[dlno]){_APOS}{_L}{{2}}{_W}*"  # o'clock, O'Neil, d'ye
_HYPHENATED = (rf"(?:{_APO_LETTER}|{_W}+)(?:[\-\u2010\u2011](?:{_APO_LETTER}|{_W}+))+")
# With "." or "," before the first hyphen ("3.5-inch") the parts after it are ASCII.
_HYPHENATED_ASCII = rf"{_W}[A-Za-z0-9.,]*(?:-(?:(?:[A-Za-z]\.){{2,}}|[A-Za-z0-9]+))+"
_AMPERSAND = r"[A-Z]+&[A-Z]+"  # AT&T, but b & w
_APO_VOWEL = rf"{_L}+[aeiouyAEIOUY]{_APOS}[aeiouA-Z]{_L}*"


# (name, pattern) in priority order (earlier wins a tie). A pattern with groups "tok" and "la"
# matches "tok" followed by the look-ahead "la": both count for length, only "tok" is consumed.
_RULES = [
    ("url", r"(?:https?|ftp)://[^\s<>\"']*[^\s<>\"'.,;:!?()\[\]{}]"),
    ("url", r"[^\s\dA-Z\"`'<>|.!?(){}\[\],\-_$/=;:]"
            r"(?:[^\sA-Z\"`'<>|.!?(){}\[\],\-_$/=;:]*\.)+(?i:com|net|org|edu)"),  # a.com
    ("email", rf"{_W}[\w.+\-]*@{_W}+(?:\.{_W}+)*"),
    ("sgml", r"</?[A-Za-z][^\s<>]*>"),
    ("word_nt", rf"(?P<tok>[{_LATIN_LETTER}]+)(?=(?P<la>[nN]{_APOS}[tT]))"),
    ("word_clitic", rf"(?P<tok>{_WORD})(?=(?P<la>{_CLITIC}))"),
    ("apo_word", rf"(?i:c'mon|li'l|e'er|ev'ry|nor'easter|s'mores|somethin')(?!{_L})"),
    ("apo_word", rf"{_APOS}(?:[eE][mM]|[cC][aA][uU][sS][eE]|[tT][iI][lL][lL]?)"),  # 'em 'til
    ("apo_word", rf"{_APOS}[nN](?!{_L})"),
    ("apo_word", rf"{_APOS}[nN]{_APOS}"),  # rock 'n' roll
    ("apo_word", rf"{_APOS}[2-9]0[sS]"),  # '90s
    ("apo_word", rf"{_APOS}\d\d(?=\s)"),  # '98
    ("apo_t", r"(?P<tok>'[tT])(?=(?P<la>[iI][sS]|[wW][aA][sS]))"),  # 'tis, 'twas
    ("abbrev", rf"(?P<tok>(?i:ph\.d\.))(?=(?P<la>{_L}*)[\s\S])"),  # "Ph.D.s" -> ph.d. s
    ("abbrev", rf"(?:{_CAPITALIZED})\."),
    ("abbrev", rf"(?:{_NOT_UPPER})\."),
    ("abbrev", rf"(?P<tok>(?i:{_alternatives(_ABBREVIATIONS_BEFORE_NUMBER)})\.)(?=(?P<la>\s?\d))"),
    ("abbrev", _ABBREVIATION),  # mr.  etc.  j.  u.s.  a.m.
    # ... but a single letter loses it before a word that starts a sentence: "a. The" -> a . the
    ("abbrev", rf"(?P<tok>[A-Za-z])(?=(?P<la>\.\s+(?:{_STARTERS}|M[rRsS]\.)(?=\s|\Z)))"),
    ("apo_word", _APO_LETTER),
    ("apo_word", _APO_VOWEL),  # ma'am
    ("apo_word", rf"[dDlLjJyY]{_APOS}"),  # y'all -> y' all
    ("fraction", r"(?:\d{1,4}[- \u00a0])?\d{1,4}/\d{1,4}"),
    ("word", r"[A-Za-z0-9]+(?:-[A-Za-z]+)*(?:/[A-Za-z0-9]+(?:-[A-Za-z]+)*){1,2}"),  # and/or
    ("word", _HYPHENATED),  # black-and-white, café-au-lait
    ("word", _HYPHENATED_ASCII),  # 3.5-inch, u.s.-made
    # A word keeps a period that a comma, semicolon or colon follows: "dog.," -> dog. ,
    ("word", rf"(?P<tok>(?:{_HYPHENATED}|{_HYPHENATED_ASCII}|{_WORD}|{_APO_LETTER}|{_AMPERSAND})\.)"
             r"(?=(?P<la>[,;:]))"),
    ("word", r"[\-+]?(?:\d*(?:[.:,]\d+)+|\d+)"),  # numbers
    ("word", _WORD),
    ("word", rf"{_AMPERSAND}|[A-Z]*\$"),  # AT&T, US$
    ("word", rf"#{_L}{_W}*|@(?:{_L}|_)\w*"),  # #tag, @name
    ("ampersand", r"&amp;"),
    ("nt", rf"[nN]{_APOS}[tT]{_L}*"),
    ("clitic", _CLITIC),
    ("dots", r"\.\.\.+|\.(?: \.){2,}|\u2026"),  # ... . . . …
    ("dashes", "--+|[\u2013\u2014\u2015]"),
    ("quote", "``|''|[\"`'\u2018\u2019\u201b\u201c\u201d\u00ab\u00bb\u2039\u203a]"),
    ("word", r"[!?]+|\*+|#+|_+"),
]
_COMPILED = [(name, re.compile(pattern)) for name, pattern in _RULES]
_SINGLE_CHARS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-",
                 "}": "-rcb-", "\u00a2": "cents", "\u00a3": "#", "\u00a4": "$", "\u20a0": "$",
                 "\u20ac": "$", "\u00bc": "1/4", "\u00bd": "1/2", "\u00be": "3/4",
                 "\u2153": "1/3", "\u2154": "2/3"}
_SPACE = re.compile(r"[\s\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff\u00ad]+")
_PLAIN = re.compile(r"[a-z]+(?=\s|$)")  # the common case: a lower-case word and a space
_PUNCTUATION_TOKENS = frozenset(PUNCTUATIONS)


def _tokens(text: str, following: str | None = None) -> list[str]:
  """The tokens of `text`, lower-cased; `following`: the next line the Java tokenizer sees."""
  text = text.replace("\u00ad", "")  # soft hyphens vanish (inside words) or become "-"
  out, pos, n = [], 0, len(text)
  if following is not None:  # a few rules look past the end of the line
    text += "\n" + following.replace("\u00ad", "")
  while pos < n:
    space = _SPACE.match(text, pos)
    if space:
      pos = space.end()
      continue
    plain = _PLAIN.match(text, pos)
    if plain and plain.group() not in _SPLIT_WORDS:
      out.append(plain.group())
      pos = plain.end()
      continue
    best, best_len, best_name = None, 0, None
    for name, pattern in _COMPILED:
      m = pattern.match(text, pos)
      if m:
        length = m.end("la") - pos if "la" in pattern.groupindex else m.end() - pos
        if length > best_len:
          best, best_len, best_name = m, length, name
    if best is None:  # one character no rule takes
      ch = text[pos]
      pos += 1
      if not _deleted(ch):
        out.append(_SINGLE_CHARS.get(ch, ch))
      continue
    token = best.group("tok") if "tok" in best.re.groupindex else best.group()
    pos += len(token)
    if best_name in ("word", "word_clitic") and token.lower() in _SPLIT_WORDS:
      out.extend(_SPLIT_WORDS[token.lower()])
    elif best_name == "fraction":
      out.append(token.replace(" ", "\u00a0"))
    elif best_name in ("nt", "clitic"):
      out.append(token.replace("\u2019", "'"))
    elif best_name == "ampersand":
      out.append("&")
    elif best_name == "dots":
      out.append("...")
    elif best_name == "dashes":
      out.append("--")
    elif best_name == "quote":
      out.append("''")
    else:
      out.append(token)
  return [t.lower() for t in out]


def tokenize_python(text: str, following: str | None = None) -> str:
  """One caption -> the space-joined tokens pycocoevalcap's PTBTokenizer would keep.

  pycocoevalcap tokenizes all captions in one Java run, one per line, and the Java tokenizer
  looks past the end of a line in a few places ("no." keeps its period when the next line
  starts with a number). `following` is that next caption; None: this is the last line.
  """
  return " ".join(t for t in _tokens(text, following) if t not in _PUNCTUATION_TOKENS)


# --------------------------------------------------------------------------------------------
# Either one


def tokenize(captions: Mapping[Hashable, Sequence[str]], use_java: bool | None = None
             ) -> dict[Hashable, list[str]]:
  """{id: [caption, ...]} -> {id: [tokenized caption, ...]}, punctuation removed.

  use_java: pycocoevalcap's PTBTokenizer (Java) if True, the pure-Python tokenizer if False,
  None: Java when it works here.
  """
  if use_java is None:
    use_java = java_available()
  elif use_java and not java_available():
    raise RuntimeError("use_java=True but no working `java` on PATH")
  if use_java:
    return _tokenize_java(captions)
  # The lines pycocoevalcap would write, in its order, each tokenized knowing the next one.
  lines = [c.replace("\n", " ") for v in captions.values() for c in v]
  tokenized = iter([tokenize_python(line, lines[i + 1] if i + 1 < len(lines) else None)
                    for i, line in enumerate(lines)])
  return {k: [next(tokenized) for _ in v] for k, v in captions.items()}
