"""The seed's training run, faithfully: TFDS coco_captions, InceptionResNetV2, one epoch.

    python train.py --config configs/coco.py --workdir workdirs/coco

Every default is the seed notebook's setting. Improvements most users want, as overrides:
    --config.data.all_captions=True          all 5 captions per image (5x the examples)
    --config.data.cache=True                 encode each image once, on disk (same loss)
    --config.train.length_buckets='(16,24,32,64)'   fewer compiled shapes (same loss)
    --config.data.source=karpathy --config.data.path=dataset_coco.json
        --config.data.image_root=/data/coco  the usual Karpathy-split files instead of TFDS
Needs: pip install -e '.[tfds]' and the prepared TFDS data set, and the InceptionResNetV2
weights file (see README: "The seed's real setting").
"""

import ml_collections

from configs import quickstart


def get_config() -> ml_collections.ConfigDict:
  config = quickstart.get_config()  # same fields; every value that matters is set below

  config.data = ml_collections.ConfigDict()
  config.data.source = "tfds_coco"
  config.data.tfds_data_dir = ""  # "" = TFDS's default (~/tensorflow_datasets)
  config.data.use_restval = False  # the seed trains on `train` only (82,783 images)
  config.data.all_captions = False  # the seed keeps the first caption of each image
  # Off as in the seed, which keeps no features: the frozen encoder's output is then computed
  # at start-up and held in memory (float16: about 16 GB for the 82,783 train images). The
  # cache override keeps it on disk and survives restarts; the loss is the same either way.
  config.data.cache = False
  config.data.cache_dir = ""
  # Keys other sources read, so --config.data.source=... overrides work:
  config.data.path = ""
  config.data.image_root = ""

  config.encoder.name = "inception_resnet_v2"
  config.encoder.weights = ""  # "" = $JAXCAP_WEIGHTS_DIR or ~/.keras/models
  config.encoder.image_size = 299  # bilinear resize, aspect not kept, pixels / 255 in [0, 1]
  # The seed's tf.image.resize (bilinear, no antialiasing), pixel for pixel; Pillow's
  # antialiased resize ("pil_bilinear") feeds the encoder different pixels.
  config.encoder.resize = "tf_bilinear"
  config.encoder.batch_size = 32

  config.model.decoder = "gru"  # the seed's; see quickstart.py for the others
  config.model.units = 512
  config.model.vocab_size = 20000
  config.model.max_length = 64
  config.model.grid_position_embedding = False
  config.model.init_hidden_from_image = False

  config.train.batch_size = 32  # drop remainder
  config.train.num_steps = 2586  # one epoch: 82,783 // 32
  config.train.learning_rate = 1e-3
  config.train.lr_schedule = "constant"
  config.train.b1 = 0.9
  config.train.b2 = 0.999
  config.train.eps = 1e-7
  config.train.length_buckets = ()  # the seed pads every caption to 64 tokens
  config.train.compute_dtype = "float32"
  config.train.log_every = 100
  config.train.eval_every = 1000
  config.train.eval_examples = 500
  config.train.checkpoint_every = 500
  config.train.keep_checkpoints = 3
  # Self-critical sequence training (jaxcap/training/scst.py): after train.num_steps cross-entropy
  # steps, this many steps that follow the CIDEr-D reward of sampled captions (0 = off).
  config.train.scst_steps = 0
  config.train.scst_batch_size = 0  # images a step; 0: train.batch_size
  config.train.scst_samples = 5  # sampled captions per image
  config.train.scst_baseline = "greedy"  # the greedy caption's reward, or "mean" of the others
  config.train.scst_learning_rate = 5e-5
  config.train.scst_temperature = 1.0
  config.train.scst_top_k = 0  # 0: sample from the whole vocabulary

  config.decoding.method = "greedy"  # the tools' default; the seed sampled (top-10, T = 1)
  config.decoding.top_k = 10
  config.decoding.temperature = 1.0
  return config
