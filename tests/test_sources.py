"""The data sources on tiny fixture datasets, broken and odd images included."""

import json

import ml_collections
import numpy as np
import pytest
from PIL import Image

from jaxcap.data import pipeline, sources


def write_images(folder):
  folder.mkdir(parents=True, exist_ok=True)
  Image.new("RGB", (20, 10), (200, 10, 10)).save(folder / "red.jpg")
  Image.new("L", (8, 8), 90).save(folder / "gray.png")
  Image.new("RGBA", (8, 8), (0, 0, 255, 255)).save(folder / "blue.png")
  Image.new("CMYK", (8, 8), (0, 0, 255, 0)).save(folder / "yellow.jpg")
  full = folder / "broken.jpg"
  Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), np.uint8)).save(full)
  full.write_bytes(full.read_bytes()[:200])
  (folder / "empty.png").write_bytes(b"")


def toy_features(images):
  return images.reshape(images.shape[0], -1, 3)[:, ::16]


def encode(split):
  return pipeline.encode_images(split, toy_features, batch_size=4)


def test_jsonl(tmp_path):
  write_images(tmp_path / "img")
  lines = [{"image": "img/red.jpg", "caption": "a red thing", "split": "train"},
           {"image": "img/red.jpg", "caption": "red", "split": "train"},
           {"image": "img/gray.png", "captions": ["gray", "grey"], "split": "train"},
           {"image": str(tmp_path / "img/blue.png"), "caption": "blue", "split": "val"},
           {"image": "img/yellow.jpg", "caption": "yellow", "split": "test"},
           {"image": "img/broken.jpg", "caption": "broken", "split": "train"},
           {"image": "img/empty.png", "caption": "empty", "split": "train"}]
  path = tmp_path / "data.jsonl"
  path.write_text("\n".join(json.dumps(l) for l in lines) + "\n")
  config = ml_collections.ConfigDict({"source": "jsonl", "path": str(path)})
  splits = sources.splits(config, 8)
  train = splits["train"]
  assert len(train) == 4 and train.captions[0] == ["a red thing", "red"]
  assert train.keys[0] == str(tmp_path / "img" / "red.jpg")
  assert splits["val"].captions == [["blue"]] and len(splits["test"]) == 1
  features, kept = encode(train)
  assert list(kept) == [0, 1] and features.shape[0] == 4
  image = splits["test"].load(0)
  assert image.shape == (8, 8, 3) and image[..., 2].mean() < 0.3  # CMYK yellow -> RGB


def test_jsonl_errors_name_the_line(tmp_path):
  path = tmp_path / "bad.jsonl"
  path.write_text('{"image": "a.jpg", "caption": "x"}\n{"image": "b.jpg"}\n')
  config = ml_collections.ConfigDict({"source": "jsonl", "path": str(path)})
  with pytest.raises(ValueError, match="line 2"):
    sources.splits(config, 8)


def test_jsonl_non_utf8_byte_names_file_and_line(tmp_path):
  path = tmp_path / "latin1.jsonl"
  path.write_bytes('{"image": "a.jpg", "caption": "un caf\u00e9"}\n'.encode("utf-8")
                   + '{"image": "b.jpg", "caption": "un caf\u00e9"}\n'.encode("latin-1"))
  config = ml_collections.ConfigDict({"source": "jsonl", "path": str(path)})
  with pytest.raises(ValueError, match=r"latin1.jsonl, line 2: not UTF-8 \(byte 0xe9 at "
                     r"column 38\)"):
    sources.splits(config, 8)


def test_jsonl_hashed_split_is_stable(tmp_path):
  path = tmp_path / "d.jsonl"
  path.write_text("".join(json.dumps({"image": f"{i}.jpg", "caption": "c"}) + "\n"
                          for i in range(400)))
  config = ml_collections.ConfigDict({"source": "jsonl", "path": str(path),
                                      "val_fraction": 0.1, "test_fraction": 0.1})
  a, b = sources.splits(config, 8), sources.splits(config, 8)
  assert a["val"].keys == b["val"].keys
  assert 20 < len(a["val"]) < 60 and 20 < len(a["test"]) < 60


def test_karpathy(tmp_path):
  write_images(tmp_path / "root" / "val2014")
  entries = [{"filepath": "val2014", "filename": "red.jpg", "split": "train",
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
  splits = sources.splits(config, 8)
  assert splits["train"].captions == [["A red box.", "Red."], ["Gray."]]
  config.use_restval = False
  assert len(sources.splits(config, 8)["train"]) == 1
  with pytest.raises(ValueError, match="no readable images in the test split"):
    encode(splits["test"])


def test_coco_json(tmp_path):
  write_images(tmp_path / "train2017")
  ann = {"images": [{"id": 1, "file_name": "red.jpg"}, {"id": 2, "file_name": "gray.png"},
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
  splits = sources.splits(config, 8)
  assert splits["train"].captions[0] == ["red", "a red one"]
  assert splits["test"].keys == splits["val"].keys
  _, kept = encode(splits["train"])
  assert list(kept) == [0, 1]
