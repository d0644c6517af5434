"""Captions images with a trained model: `jaxcap sample --image a.jpg photos/ [...]`.

Prints one line per image, `path<TAB>caption` (JSON Lines with --json), or writes them to
--output (.jsonl or .csv: image, caption). A folder is searched recursively for image files.
An image that cannot be read gets one error line on stderr; the others are still captioned,
and the exit status is then 1.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys

from jaxcap import cli  # no JAX: --help stays instant
from jaxcap.decoding import options as decode_options

OUTPUT_FORMATS = (".jsonl", ".csv")
PROGRESS_FROM = 8  # a progress bar from this many images on


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  p.add_argument("--image", nargs="+", required=True, metavar="PATH",
                 help="image files (any format Pillow reads) or folders (searched "
                      "recursively for image files)")
  p.add_argument("--workdir", default=cli.DEFAULT_WORKDIR, help="training workdir to load")
  cli.add_model_flags(p)
  p.add_argument("--batch_size", type=int, default=32, help="images per compiled call")
  p.add_argument("--output", metavar="FILE", default=None,
                 help="write the captions to FILE (.jsonl or .csv: image, caption) instead of "
                      "printing them")
  p.add_argument("--attention", metavar="PNG_OR_DIR", default=None,
                 help="draw each word's attention over the image: a .png path for one "
                      "image, or a folder (one <image name>.png per image)")
  p.add_argument("--cache_dir", default=cli.CACHE_DIR, help=cli.CACHE_HELP)
  p.add_argument("--json", action="store_true",
                 help='print {"image": path, "caption": text} per line')
  decode_options.add_flags(p)
  args = p.parse_args(argv)
  try:  # the options' own checks before any model loads (again later over the model's)
    decode_options.options_from_flags(args, decode_options.DecodeOptions())
  except ValueError as e:
    p.error(str(e))
  if args.batch_size < 1:
    p.error("--batch_size must be >= 1")
  if args.output and os.path.splitext(args.output)[1].lower() not in OUTPUT_FORMATS:
    p.error(f"--output {args.output}: the name must end in {' or '.join(OUTPUT_FORMATS)}")
  return args


def image_paths(given: list[str]) -> list[str]:
  """The given paths, each folder replaced by its image files (recursively, sorted, by
  extension: those Pillow can open). Other paths stay, so a bad one gets its error."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  extensions = {e.lower() for e in Image.registered_extensions()}
  out = []
  for path in given:
    if not os.path.isdir(path):
      out.append(path)
      continue
    for folder, dirs, files in os.walk(path):
      dirs.sort()
      out.extend(os.path.join(folder, name) for name in sorted(files)
                 if os.path.splitext(name)[1].lower() in extensions)
  return out


def _figure_path(target: str, image_path: str, count: int) -> str:
  if target.lower().endswith(".png") and count == 1:
    return target
  os.makedirs(target, exist_ok=True)
  return os.path.join(target, os.path.splitext(os.path.basename(image_path))[0] + ".png")


class _Output:
  """Where the captions go: stdout (tab-separated or --json lines), or a .jsonl / .csv file."""

  def __init__(self, path: str | None, as_json: bool):
    self.path, self.as_json = path, as_json
    self.kind = os.path.splitext(path)[1].lower() if path else None
    self.file = open(path, "w", encoding="utf-8", newline="") if path else None
    self.csv = csv.writer(self.file) if self.kind == ".csv" else None
    if self.csv:
      self.csv.writerow(["image", "caption"])
    self.count = 0

  def write(self, image: str, caption: str) -> None:
    self.count += 1
    if self.csv:
      self.csv.writerow([image, caption])
    elif self.file:
      self.file.write(json.dumps({"image": image, "caption": caption}) + "\n")
    elif self.as_json:
      print(json.dumps({"image": image, "caption": caption}), flush=True)
    else:
      print(f"{image}\t{caption}", flush=True)

  def close(self) -> None:
    if self.file:
      self.file.close()
      print(f"wrote {self.count} captions to {self.path}", file=sys.stderr)


def main(argv=None) -> int:
  args = parse_args(argv)
  paths = image_paths(args.image)
  if not paths:
    print(f"error: no image files in {', '.join(args.image)}", file=sys.stderr)
    return 1
  captioner = cli.load_captioner(args.model or args.workdir, args.cache_dir, args.checkpoint)
  if captioner is None:
    return 1
  try:
    options = decode_options.options_from_flags(args, captioner.options)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  # Heavy imports after argument parsing, so --help is instant.
  import tqdm  # pylint: disable=g-import-not-at-top

  from jaxcap.evaluation import figures  # pylint: disable=g-import-not-at-top
  from jaxcap.model import decoders  # pylint: disable=g-import-not-at-top
  print(f"decoding: {options.describe()}", file=sys.stderr)
  if args.attention and args.attention.lower().endswith(".png") and len(paths) > 1:
    print(f"error: --attention {args.attention}: give a folder, not a .png file, when "
          f"captioning {len(paths)} images", file=sys.stderr)
    return 1

  failed = False
  output = _Output(args.output, args.json)
  bar = tqdm.tqdm(total=len(paths), desc="captioning", unit="image", file=sys.stderr,
                  disable=len(paths) < PROGRESS_FROM, dynamic_ncols=True)
  try:
    for start in range(0, len(paths), args.batch_size):
      loaded = []
      for path in paths[start:start + args.batch_size]:
        try:
          loaded.append((path, captioner.prepare(path)))
        except ValueError as e:  # image_files.ImageError: names the file
          bar.write(f"error: {e}", file=sys.stderr)
          failed = True
      results = captioner.caption_batch([image for _, image in loaded], options) if loaded \
          else []
      for (path, image), result in zip(loaded, results):
        if args.attention:
          figures.save_attention_figure(
              _figure_path(args.attention, path, len(paths)), image, result.words,
              result.attention,
              title=f"{result.text}   ({decoders.attention_description(captioner.spec)})")
        output.write(path, result.text)
      bar.update(min(args.batch_size, len(paths) - start))
  finally:
    bar.close()
    output.close()
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
