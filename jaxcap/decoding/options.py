"""How to decode, as one small description (`DecodeOptions`) and one set of flags.

Used by `decoding.decode` and every command line; imports no JAX, so `--help` and flag
errors are instant.
"""

from __future__ import annotations

import argparse
import dataclasses

from jaxcap import compat, ranges

METHODS = ("greedy", "sample", "beam")
# What each field of DecodeOptions allows: checked by DecodeOptions itself and, for a config's
# `decoding` section, by config_checks (the one statement of these ranges).
RANGES = {
    "method": ranges.one_of(*METHODS),
    "top_k": ranges.integer(0),  # 0: the whole vocabulary
    "temperature": ranges.number(0, low_open=True),
    "beam_size": ranges.integer(1),
    "alpha": ranges.number(0),  # the length-penalty exponent
    "seed": ranges.INT,
    "no_repeat_ngram": ranges.integer(0),  # 0: off
    "no_consecutive_repeat": ranges.BOOL,
}


@dataclasses.dataclass(frozen=True)
class DecodeOptions:
  """How to pick words.

  method: "greedy" (the most likely word), "sample" (the seed's: draw among the `top_k`
    largest logits divided by `temperature`; top_k 0 = the whole vocabulary) or "beam"
    (`beam_size` best captions by log-probability over the GNMT length penalty with
    exponent `alpha`; beam_size 1 = greedy).
  seed: the sampling key's seed (sampling only).
  no_repeat_ngram: no n-gram of this size twice within a caption (0 = off; 1 = no word
    twice); no_consecutive_repeat: no token twice in a row. Every method obeys them
    (`constraints.py`); off by default.
  """
  method: str = "greedy"
  top_k: int = 10
  temperature: float = 1.0
  beam_size: int = 3
  alpha: float = 0.0
  seed: int = 0
  no_repeat_ngram: int = 0
  no_consecutive_repeat: bool = False

  def __post_init__(self):
    problems = [f"{name} = {getattr(self, name)!r}: must be {allowed}"
                for name, (allowed, ok) in RANGES.items() if not ok(getattr(self, name))]
    if problems:
      raise ValueError("; ".join(problems))

  @property
  def constrained(self) -> bool:
    """Whether a repetition rule is on."""
    return bool(self.no_repeat_ngram or self.no_consecutive_repeat)

  def describe(self) -> str:
    rules = ([f"no repeated {self.no_repeat_ngram}-gram"] if self.no_repeat_ngram else []) + (
        ["no word twice in a row"] if self.no_consecutive_repeat else [])
    return self._describe_method() + (f", {', '.join(rules)}" if rules else "")

  def _describe_method(self) -> str:
    if self.method == "beam":
      return f"beam {self.beam_size}" + (f" (alpha {self.alpha})" if self.alpha else "")
    if self.method == "sample":
      top = f"top-{self.top_k}" if self.top_k else "full-vocabulary"
      return f"{top} sampling, temperature {self.temperature}"
    return "greedy"

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_config(cls, config) -> "DecodeOptions":
    """The options of a training config's `decoding` section (or the older `sample` one)."""
    if "decoding" in config:
      return cls(**dict(config.decoding))
    return cls(**compat.decoding_of_sample_section(config.sample))


def add_flags(parser: argparse.ArgumentParser) -> None:
  """The decoding flags of sample.py and evaluate.py (defaults: the workdir's config)."""
  g = parser.add_argument_group("decoding (defaults: the training config's `decoding`)")
  g.add_argument("--decoding", choices=METHODS, default=None,
                 help="greedy, sample (top-k/temperature) or beam search")
  g.add_argument("--greedy", action="store_true", help="same as --decoding greedy")
  g.add_argument("--top_k", type=int, default=None,
                 help="sampling: draw among the k most likely words (0 = all)")
  g.add_argument("--temperature", type=float, default=None,
                 help="sampling: divide the logits by this first (> 0)")
  g.add_argument("--beam_size", type=int, default=None,
                 help="beam search width; giving it alone selects --decoding beam")
  g.add_argument("--alpha", type=float, default=None,
                 help="beam search length-penalty exponent (0 = plain log-probability)")
  g.add_argument("--seed", type=int, default=None, help="sampling seed")
  g.add_argument("--no_repeat_ngram", type=int, default=None, metavar="N",
                 help="no n-gram of size N twice within a caption (0 = off, 1 = no word twice)")
  g.add_argument("--no_consecutive_repeat", action="store_true", default=None,
                 help="no word twice in a row")


def options_from_flags(args: argparse.Namespace, default: DecodeOptions) -> DecodeOptions:
  """The options `add_flags`' flags ask for, on top of `default`; ValueError if invalid."""
  method = args.decoding or ("greedy" if args.greedy else None)
  if method is None and args.beam_size is not None:
    method = "beam"
  if args.greedy and args.decoding not in (None, "greedy"):
    raise ValueError(f"--greedy contradicts --decoding {args.decoding}")
  given = {name: getattr(args, name) for name in ("top_k", "temperature", "beam_size",
                                                  "alpha", "seed", "no_repeat_ngram",
                                                  "no_consecutive_repeat")
           if getattr(args, name, None) is not None}
  return dataclasses.replace(default, **({"method": method} if method else {}), **given)
