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
}


@dataclasses.dataclass(frozen=True)
class DecodeOptions:
  """How to pick words.

  method: "greedy" (the most likely word), "sample" (the seed's: draw among the `top_k`
    largest logits divided by `temperature`; top_k 0 = the whole vocabulary) or "beam"
    (`beam_size` best captions by log-probability over the GNMT length penalty with
    exponent `alpha`; beam_size 1 = greedy).
  seed: the sampling key's seed (sampling only).
  """
  method: str = "greedy"
  top_k: int = 10
  temperature: float = 1.0
  beam_size: int = 3
  alpha: float = 0.0
  seed: int = 0

  def __post_init__(self):
    problems = [f"{name} = {getattr(self, name)!r}: must be {allowed}"
                for name, (allowed, ok) in RANGES.items() if not ok(getattr(self, name))]
    if problems:
      raise ValueError("; ".join(problems))

  def describe(self) -> str:
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


def options_from_flags(args: argparse.Namespace, default: DecodeOptions) -> DecodeOptions:
  """The options `add_flags`' flags ask for, on top of `default`; ValueError if invalid."""
  method = args.decoding or ("greedy" if args.greedy else None)
  if method is None and args.beam_size is not None:
    method = "beam"
  if args.greedy and args.decoding not in (None, "greedy"):
    raise ValueError(f"--greedy contradicts --decoding {args.decoding}")
  given = {name: getattr(args, name) for name in ("top_k", "temperature", "beam_size",
                                                  "alpha", "seed")
           if getattr(args, name) is not None}
  return dataclasses.replace(default, **({"method": method} if method else {}), **given)
