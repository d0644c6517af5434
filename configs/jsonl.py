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

  # On real images (the emoji set, unseen test emoji) the seed's own GRU scored best of the
  # decoders measured (README "Decoders"); the quickstart's two GRU options, which the
  # shapes' layout grammar needs, cost CIDEr there (about 87 vs 102, two seeds each).
  config.model.decoder = "gru"
  config.model.units = 256
  config.model.vocab_size = 5000
  config.model.max_length = 32
  config.model.grid_position_embedding = False
  config.model.init_hidden_from_image = False
  # Small-data regularisers (docs/quality.md, "Regularisers"): on the emoji set, three seeds
  # each, they raised mean validation CIDEr from 71.3 to 75.0 and lowered the best
  # validation loss in every seed (3.06-3.18 vs 3.22-3.38); the seed's GRU is all of them off.
  config.model.embedding_dropout = 0.2
  config.model.output_dropout = 0.3
  config.model.tie_embedding = True
  config.train.label_smoothing = 0.1
  config.train.ema_decay = 0.99

  # A few hundred to a few thousand images are learnt by heart in about 1,000 steps, and
  # validation loss rises after that: validate often and caption with best/ (the
  # checkpoint with the best validation CIDEr, which sample.py and evaluate.py load).
  config.train.batch_size = 32
  config.train.num_steps = 1500
  config.train.length_buckets = (16, 24, 32)
  config.train.eval_every = 250
  config.train.eval_examples = 256
  config.train.checkpoint_every = 250
  return config
