"""The README's examples, run so that they cannot drift from the code.

Fast checks: the README's length and opening commands, its table of contents and links (into
docs/ too), the `make` targets it names, the layout table's paths, and its JSON Lines example
read by the JSON Lines reader. Slow checks, in a sandbox folder where `workdirs/quickstart` is a
tiny model trained in seconds and `photo.jpg` and `photos/` are shapes images: every ```python
block and every ```sh block marked `<!-- test -->` on the line above its fence, and every
`--help` command of the other ```sh blocks.
"""

import json
import os
import re
import subprocess
import sys

import PIL.Image
import pytest

from jaxcap.data import jsonl, shapes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
MAX_LINES = 300
SCRIPTS = ("train.py", "sample.py", "evaluate.py", "serve.py")


def blocks(path=README):
  """[(language, marker, text, line number)] of the fenced blocks; marker is the
  `<!-- ... -->` comment on the last non-blank line above the fence, or ''."""
  lines = open(path, encoding="utf-8").read().splitlines()
  found, i = [], 0
  while i < len(lines):
    if lines[i].startswith("```"):
      language, start = lines[i][3:].strip(), i
      above = next((l.strip() for l in reversed(lines[:i]) if l.strip()), "")
      marker = above[4:-3].strip() if re.fullmatch(r"<!--.*-->", above) else ""
      i += 1
      while not lines[i].startswith("```"):
        i += 1
      found.append((language, marker, "\n".join(lines[start + 1:i]), start + 1))
    i += 1
  return found


def slug(heading: str) -> str:
  """GitHub's anchor for a heading."""
  return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path):
  return {slug(l.lstrip("#")) for l in open(path, encoding="utf-8") if l.startswith("#")}


def readme_text():
  return open(README, encoding="utf-8").read()


def test_readme_is_short_and_opens_with_the_two_commands():
  text = readme_text()
  assert len(text.splitlines()) <= MAX_LINES
  language, _, first, _ = blocks()[0]
  assert language == "sh"
  commands = [l.split("#")[0].strip() for l in first.splitlines()]
  assert commands == ["make demo", "make test"]
  assert text.index("```sh") < text.index("\n## ")  # before any section


@pytest.mark.parametrize("doc", ["README.md"] + [
    os.path.join("docs", n) for n in sorted(os.listdir(os.path.join(ROOT, "docs")))
    if n.endswith(".md")])
def test_links_and_anchors_resolve(doc):
  path = os.path.join(ROOT, doc)
  text = open(path, encoding="utf-8").read()
  links = re.findall(r"\]\(([^)\s]+)\)", text)
  assert links or doc != "README.md"
  for link in links:
    if re.match(r"[a-z]+://", link):
      continue
    target, _, anchor = link.partition("#")
    target = os.path.normpath(os.path.join(os.path.dirname(path), target)) if target else path
    assert os.path.exists(target), f"{doc}: {link} points at nothing"
    if anchor:
      assert anchor in anchors(target), f"{doc}: no heading for #{anchor} in {target}"


def test_make_targets_named_in_the_readme_exist():
  named = set(re.findall(r"`make ([a-z][a-z-]*)`", readme_text()))
  named |= {l.split()[1] for _, _, b, _ in blocks() for l in b.splitlines()
            if l.startswith("make ")}
  makefile = open(os.path.join(ROOT, "Makefile"), encoding="utf-8").read()
  defined = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.M))
  assert {"demo", "test", "test-fast", "setup"} <= named
  assert named <= defined, named - defined


def test_layout_table_paths_exist():
  text = readme_text()
  table = text[text.index("## Layout"):].split("\n## ")[0]
  paths = [p for row in table.splitlines() if row.startswith("| `")
           for p in re.findall(r"`([^`]+)`", row.split("|")[1])]
  assert "jaxcap/training/" in paths and "jaxcap/serving/" in paths
  for p in paths:
    assert os.path.exists(os.path.join(ROOT, p)), p


def test_jsonl_example_is_what_the_reader_reads(tmp_path):
  [example] = [b for lang, marker, b, _ in blocks() if marker == "test:jsonl"]
  (tmp_path / "data.jsonl").write_text(example + "\n", encoding="utf-8")
  records = [json.loads(l) for l in example.splitlines()]
  splits = jsonl.read(str(tmp_path / "data.jsonl"))
  got = {os.path.relpath(image, tmp_path): (split, captions)
         for split, rows in splits.items() for image, captions in rows}
  want = {}
  for r in records:
    want.setdefault(os.path.normpath(r["image"]), []).extend(
        r.get("captions", [r.get("caption")]))
  assert {image: captions for image, (_, captions) in got.items()} == want
  for r in records:
    if "split" in r:
      assert got[os.path.normpath(r["image"])][0] == r["split"]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
  """A folder laid out as the README assumes: the root scripts and configs, a trained
  `workdirs/quickstart` (tiny), `photo.jpg` and a `photos/` folder of shapes images."""
  box = tmp_path_factory.mktemp("readme")
  for name in SCRIPTS + ("configs",):
    os.symlink(os.path.join(ROOT, name), box / name)
  workdir = box / "workdirs" / "quickstart"
  tiny = ["--config.data.num_train=96", "--config.data.num_val=16", "--config.data.num_test=8",
          "--config.model.units=16", "--config.train.batch_size=16",
          "--config.train.num_steps=6", "--config.train.eval_every=6",
          "--config.train.eval_examples=16", "--config.train.checkpoint_every=6"]
  result = subprocess.run(
      [sys.executable, "train.py", "--config", "configs/quickstart.py", "--workdir",
       str(workdir)] + tiny, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  (box / "photos").mkdir()
  examples = shapes.write_examples(box / "photos", seed=11, start=0, count=3)
  PIL.Image.open(examples[0][0]).convert("RGB").save(box / "photo.jpg", quality=95)
  return box


def run_in(box, args):
  env = dict(os.environ, PYTHONPATH=ROOT,
             PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
  return subprocess.run(args, cwd=box, env=env, capture_output=True, text=True, timeout=600)


def examples():
  """(id, language, text) of every example the sandbox runs."""
  out = []
  for language, marker, text, line in blocks():
    if language == "python":
      out.append((f"python@{line}", "python", text))
    elif language == "sh" and marker == "test":
      out.append((f"sh@{line}", "sh", text))
    elif language == "sh":
      for command in text.splitlines():
        command = command.split(" #")[0].strip()
        if command.endswith("--help"):
          out.append((f"help@{line}:{command}", "help", command))
  return out


@pytest.mark.slow
@pytest.mark.parametrize("language,text", [e[1:] for e in examples()],
                         ids=[e[0] for e in examples()])
def test_example_runs(sandbox, language, text):
  if language == "python":
    result = run_in(sandbox, [sys.executable, "-c", text])
  else:
    result = run_in(sandbox, ["bash", "-e", "-o", "pipefail", "-c", text])
  assert result.returncode == 0, f"{text}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
  if language == "help":
    assert "usage" in result.stdout.lower()
  if "--output captions.csv" in text:  # one row per image in photos/
    rows = (sandbox / "captions.csv").read_text().splitlines()
    for name in os.listdir(sandbox / "photos"):
      assert any(name in row for row in rows), (name, rows)


def test_examples_cover_the_library_and_the_help_of_every_tool():
  kinds = [e[1] for e in examples()]
  assert kinds.count("python") >= 2 and "sh" in kinds
  helps = " ".join(e[2] for e in examples() if e[1] == "help")
  assert "train.py" in helps and "sample.py" in helps and "jaxcap --help" in helps
