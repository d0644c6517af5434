"""Your own data end to end: real photos in a JSON Lines file -> train.py -> sample.py.

The photos are scikit-image's sample images (real photographs, several modes), plus a
zero-byte and a truncated file that training must skip and list, not crash on.
"""

import io
import json

import numpy as np
import PIL.Image
import pytest
import skimage.data
from helpers import run  # train.py / sample.py in a subprocess from the repository root

pytestmark = pytest.mark.slow  # train.py and sample.py in subprocesses

PHOTOS = {  # name -> (image, file format, captions)
    "coffee": (skimage.data.coffee, "JPEG", ["a cup of coffee on a saucer", "an espresso"]),
    "chelsea": (skimage.data.chelsea, "PNG", ["a cat looking to the side", "a tabby cat"]),
    "astronaut": (skimage.data.astronaut, "JPEG", ["an astronaut with a flag"]),
    "rocket": (skimage.data.rocket, "JPEG", ["a rocket on a launch pad"]),
    "motorcycle": (lambda: skimage.data.stereo_motorcycle()[0], "PNG",
                   ["a red motorcycle in a workshop"]),
    "camera": (skimage.data.camera, "PNG", ["a man with a camera on a tripod"]),  # grayscale
    "coins": (skimage.data.coins, "JPEG", ["old coins in rows"]),  # grayscale
    "logo": (skimage.data.logo, "PNG", ["a logo of a snake"]),  # RGBA
    "hubble": (skimage.data.hubble_deep_field, "JPEG", ["galaxies in deep space"]),
    "retina": (skimage.data.retina, "JPEG", ["the back of an eye"]),
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  root = tmp_path_factory.mktemp("photos")
  (root / "images").mkdir()
  lines = []
  for name, (load, fmt, captions) in PHOTOS.items():
    path = f"images/{name}.{'jpg' if fmt == 'JPEG' else 'png'}"
    PIL.Image.fromarray(np.asarray(load())).save(root / path, fmt)
    lines.append({"image": path, "captions": captions})
  (root / "images" / "empty.jpg").write_bytes(b"")
  buffer = io.BytesIO()
  PIL.Image.fromarray(skimage.data.astronaut()).save(buffer, "JPEG")
  (root / "images" / "truncated.jpg").write_bytes(buffer.getvalue()[:2000])
  lines += [{"image": "images/empty.jpg", "caption": "nothing"},
            {"image": str(root / "images" / "truncated.jpg"), "caption": "half a picture"}]
  data = root / "data.jsonl"
  data.write_text("\n".join(json.dumps(l) for l in lines) + "\n")
  return data


def test_train_then_sample_own_photos(dataset, tmp_path):
  workdir = tmp_path / "mine"
  result = run(["train.py", "--config", "configs/jsonl.py", f"--config.data.path={dataset}",
                "--workdir", str(workdir),
                # Ten photos: everything in train, so no val split (training must go on).
                "--config.data.val_fraction=0", "--config.data.test_fraction=0",
                "--config.encoder.image_size=96", "--config.model.units=16",
                "--config.train.batch_size=8", "--config.train.num_steps=6",
                "--config.train.log_every=3", "--config.train.checkpoint_every=3"])
  assert result.returncode == 0, result.stderr[-3000:]
  assert "val split has no images" in result.stdout
  assert "skipped 2 unreadable image(s)" in result.stderr
  assert "empty.jpg" in result.stderr and "truncated.jpg" in result.stderr
  steps = [json.loads(l)["step"] for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert steps == [3, 6]
  vocab = json.loads((workdir / "vocab.json").read_text())["tokens"]
  assert {"coffee", "cat", "astronaut"} <= set(vocab)
  assert list((workdir / "feature_cache").iterdir())

  photos = [str(dataset.parent / "images" / n) for n in ("coffee.jpg", "chelsea.png")]
  result = run(["sample.py", "--workdir", str(workdir), "--json", "--greedy", "--image"] + photos)
  assert result.returncode == 0, result.stderr[-3000:]
  rows = [json.loads(l) for l in result.stdout.strip().splitlines()]
  assert [r["image"] for r in rows] == photos
  assert all(isinstance(r["caption"], str) for r in rows)


def test_too_few_examples_is_one_clear_line(dataset, tmp_path):
  result = run(["train.py", "--config", "configs/jsonl.py", f"--config.data.path={dataset}",
                "--workdir", str(tmp_path / "w"), "--config.data.all_captions=False",
                "--config.encoder.image_size=96", "--config.train.batch_size=64"])
  assert result.returncode != 0
  assert "fewer than one batch of 64" in result.stderr and "batch_size" in result.stderr
  assert "Traceback" not in result.stderr
