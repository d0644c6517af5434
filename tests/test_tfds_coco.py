"""The seed's TFDS coco_captions source, offline through tfds.testing.mock_data."""

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxcap.data import image_files, pipeline, sources


def fake_coco(self, split, **unused):
  """coco_captions-shaped examples. TFDS's random generator cannot fill coco_captions'
  `captions` sequence of {id, text} consistently, so the examples are written here."""
  del self, unused
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  offset = {"train": 0, "val": 100, "test": 200, "restval": 300}[str(split)]
  rng = np.random.default_rng(offset)

  def examples():
    for i in range(5):
      n = int(rng.integers(1, 6))
      yield {"image": rng.integers(0, 255, (24 + i, 40, 3), np.uint8),
             "image/id": np.int64(offset + i),
             "captions": {"id": np.arange(n, dtype=np.int64),
                          "text": np.array([f"caption {offset + i} number {j}".encode()
                                            for j in range(n)])}}

  signature = {"image": tf.TensorSpec((None, None, 3), tf.uint8),
               "image/id": tf.TensorSpec((), tf.int64),
               "captions": {"id": tf.TensorSpec((None,), tf.int64),
                            "text": tf.TensorSpec((None,), tf.string)}}
  return tf.data.Dataset.from_generator(examples, output_signature=signature)


@pytest.mark.slow
def test_mock_coco_captions():
  config = ml_collections.ConfigDict({"source": "tfds_coco", "use_restval": True})
  with tfds.testing.mock_data(as_dataset_fn=fake_coco):
    splits = sources.splits(config, 32, "tf_bilinear")
    train, val = splits["train"], splits["val"]
    assert len(train) == 10 and len(val) == 5  # train + restval
    assert all(k.startswith("coco/") for k in train.keys)
    assert train.keys[6] == "coco/301" and train.captions[0][0] == "caption 0 number 0"
    assert all(caps and all(isinstance(c, str) for c in caps) for caps in train.captions)
    image = train.load(7)  # a restval image, read by streaming
    assert image.shape == (32, 32, 3) and image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    features, kept = pipeline.extract_features(
        val, lambda x: x.reshape(x.shape[0], -1, 3)[:, ::64], batch_size=2)
    assert list(kept) == list(range(5)) and features.shape == (5, 16, 3)
    # Streaming gives image i, not just "the next one": re-reading matches.
    np.testing.assert_array_equal(val.load(3), val.load(3))
    # The resize asked for is the one used: example 3 of val is (27, 40) pixels.
    rgb = fake_coco(None, "val").skip(3).take(1).get_single_element()["image"].numpy()
    np.testing.assert_array_equal(val.load(3), image_files.resize(rgb, 32, "tf_bilinear"))
    del config.use_restval  # unset: jaxcap.data.USE_RESTVAL, train only, as the seed
    assert len(sources.splits(config, 32, "tf_bilinear")["train"]) == 5
    np.testing.assert_array_equal(features[1].astype(np.float32),
                                  val.load(1).reshape(-1, 3)[::64].astype(np.float16))
