"""Noto Color Emoji named by Unicode (bench/emoji_dataset.py): a real image set built locally.

    python bench/emoji_dataset.py            # draws data/emoji (needs two apt packages)
    python train.py --config configs/emoji.py --workdir DIR
    python evaluate.py --workdir DIR --split test

About 3,200 training images with one CLDR name each; the splits (in the file) keep all
skin-tone and gender variants of an emoji together, so test emoji are unseen emoji.
"""

import os

import ml_collections

from configs import jsonl

DEFAULT_PATH = "data/emoji/emoji.jsonl"  # bench/emoji_dataset.py's default --out


def get_config() -> ml_collections.ConfigDict:
  config = jsonl.get_config()
  config.data.path = DEFAULT_PATH
  # Encoded once beside the images and shared by every run (keyed by encoder, size and image
  # list; bench/emoji_dataset.py deletes it when it redraws). With the set elsewhere, give
  # both: --config.data.path=OUT/emoji.jsonl --config.data.cache_dir=OUT/feature_cache.
  config.data.cache_dir = os.path.join(os.path.dirname(DEFAULT_PATH), "feature_cache")
  config.encoder.image_size = 224  # the set's images are 224 px: a 7x7 grid of detail
  config.model.vocab_size = 5000  # about 1,550 distinct words in training
  config.model.max_length = 16  # the longest name is 11 words
  config.train.length_buckets = (8, 12)
  config.train.batch_size = 64
  config.train.num_steps = 1500
  config.train.eval_every = 250
  config.train.checkpoint_every = 250
  return config
