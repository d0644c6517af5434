"""Your own captioned images as JSON Lines, on a CPU-sized model.

    python train.py --config configs/jsonl.py --config.data.path=my_data.jsonl --workdir DIR

Each line: {"image": "relative/or/absolute/path.jpg", "caption": "..."} or "captions": [...],
optionally "split": "train" | "val" | "test" (otherwise 5% val and 5% test by a stable hash).
"""

import ml_collections

from configs import quickstart


def get_config() -> ml_collections.ConfigDict:
  config = quickstart.get_config()
  config.data = ml_collections.ConfigDict()
  config.data.source = "jsonl"
  config.data.path = ""  # required: --config.data.path=FILE
  config.data.val_fraction = 0.05
  config.data.test_fraction = 0.05
  config.data.all_captions = True
  config.data.cache = True  # features on disk in <workdir>/feature_cache, computed once
  config.data.cache_dir = ""

  config.encoder.name = "mobilenet_v2"
  config.encoder.image_size = 224
  config.encoder.resize = "pil_bilinear"  # antialiased: photos of any size shrink cleanly

  config.model.units = 256
  config.model.vocab_size = 5000
  config.model.max_length = 32
  config.model.grid_position_embedding = True
  config.model.init_hidden_from_image = True

  config.train.batch_size = 32
  config.train.num_steps = 3000
  config.train.length_buckets = (16, 24, 32)
  config.train.eval_every = 500
  config.train.eval_examples = 256
  config.train.checkpoint_every = 500
  return config
