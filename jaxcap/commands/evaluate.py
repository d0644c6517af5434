"""Scores captions with the COCO caption metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr-D).

Two uses:
  jaxcap evaluate [--workdir DIR | --model FILE] --split val [--decoding beam --beam_size 3]
      captions a split with a trained model (default: workdirs/quickstart), writes
      COCO-format results, and scores them;
  jaxcap evaluate --annotations captions.json --results results.json
      scores any COCO-format results file against COCO-format annotations (no model).

The table shows each score x100, as COCO tables do (CIDEr 88.6); --json prints the raw
values pycocoevalcap computes (0.886).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

from jaxcap import cli  # no JAX: --help stays instant
from jaxcap.decoding import options as decode_options


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  p.add_argument("--annotations", help="COCO caption annotations JSON (scoring a file)")
  p.add_argument("--results", help="COCO results JSON [{image_id, caption}] (scoring a file)")
  p.add_argument("--workdir", default=None,
                 help=f"a trained workdir (captioning a split); default {cli.DEFAULT_WORKDIR} "
                      "unless --annotations/--results or --model are given")
  p.add_argument("--model", metavar="FILE", default=None,
                 help="an exported model file (`jaxcap export`) instead of --workdir")
  cli.add_checkpoint_flag(p)
  p.add_argument("--split", default="val", choices=("val", "test"))
  p.add_argument("--limit", type=int, default=None,
                 help="score only the first N images (N >= 1)")
  p.add_argument("--output", help="where to write the results JSON "
                 "(default: WORKDIR/results_<split>_<decoding>.json)")
  p.add_argument("--no_java", action="store_true",
                 help="use the pure-Python tokenizer and skip METEOR even if java is present")
  p.add_argument("--json", action="store_true", help="print the scores as one JSON object")
  decode_options.add_flags(p)
  args = p.parse_args(argv)
  try:
    decode_options.options_from_flags(args, decode_options.DecodeOptions())
  except ValueError as e:
    p.error(str(e))
  if bool(args.annotations) != bool(args.results):
    p.error("--annotations and --results go together")
  if args.annotations and (args.workdir or args.model):
    p.error("give either a model (--workdir or --model) or --annotations/--results")
  if args.workdir and args.model:
    p.error("give --workdir or --model, not both")
  if not args.annotations and not args.model:
    args.workdir = args.workdir or cli.DEFAULT_WORKDIR
  if args.limit is not None and args.limit < 1:
    p.error(f"--limit must be >= 1 (the number of images to score), not {args.limit}")
  return args


def score_files(annotations: str, results: str, use_java=None) -> dict:
  """Scores a COCO results file against COCO caption annotations.

  As the COCO tools do, only the images that have a result are scored; a result for an image
  without annotations is an error. Raises ValueError (naming the file) for malformed files.
  """
  from jaxcap.data import coco_json  # pylint: disable=g-import-not-at-top
  from jaxcap.evaluation import metrics  # pylint: disable=g-import-not-at-top
  references = coco_json.read_captions(annotations)
  candidates = coco_json.read_results(results)
  unknown = [k for k in candidates if k not in references]
  if unknown:
    known = {str(k): k for k in references}
    hint = ""
    if any(str(k) in known for k in unknown):
      hint = " (their types differ from the annotations' image ids: 42 is not \"42\")"
    shown = ", ".join(repr(k) for k in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
    raise ValueError(f"{results}: {len(unknown)} image id(s) not in {annotations}: "
                     f"{shown}{hint}")
  if len(candidates) < len(references):
    print(f"note: scoring the {len(candidates)} of {len(references)} annotated images that "
          "have a result", file=sys.stderr)
  return metrics.score({k: references[k] for k in candidates}, candidates, use_java=use_java)


def caption_split(args, use_java) -> dict | None:
  """Captions and scores a split with the model; None if there is no model (said on
  stderr)."""
  from jaxcap.data import build, pipeline, sources  # pylint: disable=g-import-not-at-top
  from jaxcap.evaluation import captioning  # pylint: disable=g-import-not-at-top
  from jaxcap.model import encoders  # pylint: disable=g-import-not-at-top

  path = args.model or args.workdir
  captioner = cli.load_captioner(path, "", args.checkpoint)
  if captioner is None:
    return None
  config = captioner.config
  if config is None:
    raise ValueError(f"{path}: no training config in this model, so no data to evaluate on")
  split = sources.splits(config.data, captioner.image_size,
                         captioner.resize_method)[args.split]
  if args.limit:
    split = pipeline.Split(split.name, split.keys[:args.limit], split.captions[:args.limit],
                           split.load, split.files and split.files[:args.limit])
  feature_fn = encoders.feature_function(captioner.encoder, captioner.encoder_params)
  # A model file keeps its features cache (data.cache) beside it.
  folder = args.workdir or os.path.dirname(os.path.abspath(args.model))
  feats, kept = build.split_features(config, split, feature_fn, folder)
  options = decode_options.options_from_flags(args, captioner.options)
  print(f"decoding: {options.describe()}", file=sys.stderr)
  data = pipeline.make_caption_set(feats, [split.captions[i] for i in kept], captioner.vocab,
                                   config.model.max_length, all_captions=False, image_rows=kept)
  scores, candidates = captioning.evaluate(captioner.params, captioner.spec, data,
                                           captioner.vocab, options, config.model.max_length,
                                           use_java=use_java)
  output = args.output or os.path.join(folder,
                                       f"results_{args.split}_{options.method}.json")
  with open(output, "w") as f:
    json.dump([{"image_id": split.keys[i], "caption": c} for i, c in zip(kept, candidates)], f,
              indent=1)
  print(f"{len(candidates)} {args.split} images captioned ({options.describe()}); "
        f"results in {output}", file=sys.stderr)
  return scores


def main(argv=None) -> int:
  args = parse_args(argv)
  use_java = False if args.no_java else None
  # Warnings (METEOR unavailable, ...) as one line each on stderr.
  warnings.formatwarning = lambda message, *_, **__: f"warning: {message}\n"
  try:
    if not args.annotations:
      scores = caption_split(args, use_java)
      if scores is None:
        return 1
    else:
      scores = score_files(args.annotations, args.results, use_java)
  except (ValueError, FileNotFoundError, RuntimeError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  from jaxcap.evaluation import metrics  # pylint: disable=g-import-not-at-top
  if scores.get("METEOR") is None and use_java is None and not metrics.java_available():
    print("note: METEOR n/a: it needs a working `java` on PATH", file=sys.stderr)
  if args.json:
    print(json.dumps(scores))
  else:
    print(metrics.format_table(scores))
  return 0


if __name__ == "__main__":
  sys.exit(main())
