"""The data sources on tiny fixture datasets, broken and odd images included."""

import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest
from PIL import Image

from jaxcap.data import coco_json, image_files, pipeline, sources

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_images(folder):
  folder.mkdir(parents=True, exist_ok=True)
  red = np.zeros((10, 20, 3), np.uint8)  # red, in stripes that the two resizes treat apart
  red[:, ::3, 0] = 250
  Image.fromarray(red).save(folder / "red.png")
  Image.new("L", (8, 8), 90).save(folder / "gray.png")
  Image.new("RGBA", (8, 8), (0, 0, 255, 255)).save(folder / "blue.png")
  Image.new("CMYK", (8, 8), (0, 0, 255, 0)).save(folder / "yellow.jpg")
  full = folder / "broken.jpg"
  Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), np.uint8)).save(full)
  full.write_bytes(full.read_bytes()[:200])
  (folder / "empty.png").write_bytes(b"")


def toy_features(images):
  return images.reshape(images.shape[0], -1, 3)[:, ::16]


def extract(split):
  return pipeline.extract_features(split, toy_features, batch_size=4)


def test_jsonl(tmp_path):
  write_images(tmp_path / "img")
  lines = [{"image": "img/red.png", "caption": "a red thing", "split": "train"},
           {"image": "img/red.png", "caption": "red", "split": "train"},
           {"image": "img/gray.png", "captions": ["gray", "grey"], "split": "train"},
           {"image": str(tmp_path / "img/blue.png"), "caption": "blue", "split": "val"},
           {"image": "img/yellow.jpg", "caption": "yellow", "split": "test"},
           {"image": "img/broken.jpg", "caption": "broken", "split": "train"},
           {"image": "img/empty.png", "caption": "empty", "split": "train"}]
  path = tmp_path / "data.jsonl"
  path.write_text("\n".join(json.dumps(l) for l in lines) + "\n")
  config = ml_collections.ConfigDict({"source": "jsonl", "path": str(path)})
  splits = sources.splits(config, 8, "pil_bilinear")
  train = splits["train"]
  assert len(train) == 4 and train.captions[0] == ["a red thing", "red"]
  assert train.keys[0] == str(tmp_path / "img" / "red.png")
  assert splits["val"].captions == [["blue"]] and len(splits["test"]) == 1
  features, kept = extract(train)
  assert list(kept) == [0, 1] and features.shape[0] == 4
  image = splits["test"].load(0)
  assert image.shape == (8, 8, 3) and image[..., 2].mean() < 0.3  # CMYK yellow -> RGB
  # The resize asked for is the one used (the two differ on this 20x10 image).
  red = image_files.load_rgb(tmp_path / "img/red.png")
  np.testing.assert_array_equal(train.load(0), image_files.resize(red, 8, "pil_bilinear"))
  tf_train = sources.splits(config, 8, "tf_bilinear")["train"]
  np.testing.assert_array_equal(tf_train.load(0), image_files.resize(red, 8, "tf_bilinear"))
  assert np.abs(tf_train.load(0) - train.load(0)).max() > 0.01
  with pytest.raises(ValueError, match="unknown resize method"):
    sources.splits(config, 8, "nearest")


def test_jsonl_errors_name_the_line(tmp_path):
  path = tmp_path / "bad.jsonl"
  path.write_text('{"image": "a.jpg", "caption": "x"}\n{"image": "b.jpg"}\n')
  config = ml_collections.ConfigDict({"source": "jsonl", "path": str(path)})
  with pytest.raises(ValueError, match="line 2"):
    sources.splits(config, 8, "pil_bilinear")


def test_jsonl_non_utf8_byte_names_file_and_line(tmp_path):
  path = tmp_path / "latin1.jsonl"
  path.write_bytes('{"image": "a.jpg", "caption": "un caf\u00e9"}\n'.encode("utf-8")
                   + '{"image": "b.jpg", "caption": "un caf\u00e9"}\n'.encode("latin-1"))
  config = ml_collections.ConfigDict({"source": "jsonl", "path": str(path)})
  with pytest.raises(ValueError, match=r"latin1.jsonl, line 2: not UTF-8 \(byte 0xe9 at "
                     r"column 38\)"):
    sources.splits(config, 8, "pil_bilinear")


@pytest.mark.slow
def test_jsonl_hashed_split_is_stable(tmp_path):
  path = tmp_path / "d.jsonl"
  path.write_text("".join(json.dumps({"image": f"{i}.jpg", "caption": "c"}) + "\n"
                          for i in range(400)))
  config = ml_collections.ConfigDict({"source": "jsonl", "path": str(path),
                                      "val_fraction": 0.1, "test_fraction": 0.1})
  here = sources.splits(config, 8, "pil_bilinear")
  assert 20 < len(here["val"]) < 60 and 20 < len(here["test"]) < 60
  # Another process (another run), with another string-hash seed, splits the same way.
  script = ("import json, sys, ml_collections\n"
            "from jaxcap.data import sources\n"
            "config = ml_collections.ConfigDict(json.loads(sys.argv[1]))\n"
            "print(json.dumps({k: s.keys for k, s in sources.splits(config, 8, "
            "'pil_bilinear').items()}))")
  for seed in ("1", "2"):
    out = subprocess.run([sys.executable, "-c", script, json.dumps(config.to_dict())],
                         cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
                         env=dict(os.environ, PYTHONHASHSEED=seed))
    there = json.loads(out.stdout)
    assert {k: s.keys for k, s in here.items()} == there


def test_karpathy(tmp_path):
  write_images(tmp_path / "root" / "val2014")
  entries = [{"filepath": "val2014", "filename": "red.png", "split": "train",
              "sentences": [{"raw": "A red box."}, {"raw": "Red."}]},
             {"filepath": "val2014", "filename": "gray.png", "split": "restval",
              "sentences": [{"raw": "Gray."}]},
             {"filepath": "val2014", "filename": "blue.png", "split": "val",
              "sentences": [{"raw": "Blue."}]},
             {"filepath": "val2014", "filename": "broken.jpg", "split": "test",
              "sentences": [{"raw": "Broken."}]}]
  path = tmp_path / "dataset_coco.json"
  path.write_text(json.dumps({"images": entries, "dataset": "coco"}))
  config = ml_collections.ConfigDict({"source": "karpathy", "path": str(path),
                                      "image_root": str(tmp_path / "root")})
  splits = sources.splits(config, 8, "pil_bilinear")
  assert splits["train"].captions == [["A red box.", "Red."]]  # restval: off by default
  assert splits["val"].captions == [["Blue."]]
  config.use_restval = True
  assert sources.splits(config, 8, "pil_bilinear")["train"].captions == [
      ["A red box.", "Red."], ["Gray."]]
  with pytest.raises(ValueError, match="no readable images in the test split"):
    extract(splits["test"])


def test_coco_json(tmp_path):
  write_images(tmp_path / "train2017")
  ann = {"images": [{"id": 1, "file_name": "red.png"}, {"id": 2, "file_name": "gray.png"},
                    {"id": 3, "file_name": "empty.png"}],
         "annotations": [{"image_id": 1, "id": 1, "caption": "red"},
                         {"image_id": 2, "id": 2, "caption": "gray"},
                         {"image_id": 1, "id": 3, "caption": "a red one"},
                         {"image_id": 3, "id": 4, "caption": "nothing"}]}
  path = tmp_path / "captions_train2017.json"
  path.write_text(json.dumps(ann))
  config = ml_collections.ConfigDict({
      "source": "coco_json", "train_annotations": str(path),
      "train_images": str(tmp_path / "train2017"), "val_annotations": str(path),
      "val_images": str(tmp_path / "train2017")})
  splits = sources.splits(config, 8, "pil_bilinear")
  assert splits["train"].captions[0] == ["red", "a red one"]
  assert splits["test"].keys == splits["val"].keys
  _, kept = extract(splits["train"])
  assert list(kept) == [0, 1]


def test_coco_caption_files(tmp_path):
  annotations = {"images": [{"id": 7}, {"id": "x"}],
                 "annotations": [{"image_id": 7, "id": 1, "caption": "a dog"},
                                 {"image_id": "x", "id": 2, "caption": "a cat"},
                                 {"image_id": 7, "id": 3, "caption": "one dog"}]}
  (tmp_path / "ann.json").write_text(json.dumps(annotations))
  (tmp_path / "res.json").write_text(json.dumps([{"image_id": 7, "caption": "dog"},
                                                 {"image_id": "x", "caption": "cat"}]))
  assert coco_json.read_captions(tmp_path / "ann.json") == {7: ["a dog", "one dog"],
                                                            "x": ["a cat"]}
  assert coco_json.read_results(tmp_path / "res.json") == {7: "dog", "x": "cat"}

  def fails(reader, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(ValueError, match=message) as e:
      reader(path)
    assert "bad.json" in str(e.value)

  fails(coco_json.read_captions, "{not json", "not valid JSON")
  fails(coco_json.read_captions, [], "expected an object with an 'annotations' list")
  fails(coco_json.read_captions, {"annotations": [{"image_id": 1}]}, "annotation 0 lacks")
  fails(coco_json.read_captions, {"annotations": [{"image_id": 1, "caption": 3}]},
        "not a string")
  fails(coco_json.read_captions, {"annotations": [{"image_id": [1], "caption": "a"}]},
        "expected an integer or a string")
  fails(coco_json.read_captions, {"annotations": []}, "no annotations")
  fails(lambda p: coco_json.read(p, str(tmp_path)),
        {"annotations": [{"image_id": 1, "caption": "a"}]}, "needs 'images'")
  fails(lambda p: coco_json.read(p, str(tmp_path)),
        {"images": [{"id": 2, "file_name": "b.jpg"}],
         "annotations": [{"image_id": 1, "caption": "a"}]}, "unknown image ids")
  fails(coco_json.read_results, {"image_id": 1, "caption": "a"}, "expected a JSON list")
  fails(coco_json.read_results, [], "no results")
  fails(coco_json.read_results, [{"image_id": 1}], "result 0 lacks")
  fails(coco_json.read_results, [{"image_id": 1, "caption": "a"},
                                 {"image_id": 1, "caption": "b"}],
        "image_id 1 has more than one result")
  with pytest.raises(FileNotFoundError, match="missing.json"):
    coco_json.read_results(tmp_path / "missing.json")
  with pytest.raises(ValueError, match="cannot read"):
    coco_json.read_results(tmp_path)  # a directory
