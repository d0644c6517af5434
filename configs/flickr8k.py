"""Flickr8k in Karpathy's split format, with the seed's encoder.

    python train.py --config configs/flickr8k.py --workdir DIR \
        --config.data.path=dataset_flickr8k.json --config.data.image_root=Flicker8k_Dataset
"""

import ml_collections

from configs import coco


def get_config() -> ml_collections.ConfigDict:
  config = coco.get_config()
  config.data.source = "karpathy"
  config.data.path = ""  # dataset_flickr8k.json
  config.data.image_root = ""  # the folder holding the 8,091 JPEGs
  config.data.use_restval = False
  config.encoder.resize = "tf_bilinear"  # the seed's encoder input, as in configs/coco.py
  config.data.all_captions = True  # 6,000 train images x 5 captions
  config.data.cache = True
  config.model.vocab_size = 10000
  config.model.max_length = 40
  config.train.num_steps = 10000  # about 10 epochs of 30,000 captions at batch 32
  config.train.length_buckets = (16, 24, 40)
  config.train.eval_every = 1000
  config.train.eval_examples = 1000
  return config
