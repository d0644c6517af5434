"""The built-in default: synthetic shapes, MobileNetV2 features, a few minutes on a CPU.

    python train.py --config configs/quickstart.py --workdir workdirs/quickstart
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0  # parameter init and batch order

  config.data = ml_collections.ConfigDict()
  config.data.source = "shapes"
  config.data.seed = 1234  # the generator's seed; train/val/test are disjoint index ranges
  config.data.num_train = 12000
  config.data.num_val = 256
  config.data.num_test = 512
  config.data.all_captions = False
  # Keep encoder features on disk (float16, 25x1280 = 64 KB per image here) so a rerun or a
  # resumed run skips encoding: --config.data.cache=True. Default: in memory, every run.
  config.data.cache = False
  config.data.cache_dir = ""  # "" = <workdir>/feature_cache
  # Contiguous image ranges, each process encoding and holding only its own (0 = one per
  # process). Batches take batch_size / shards examples from each shard, so runs with the
  # same shards train alike on any number of processes that divides it.
  config.data.shards = 0

  config.encoder = ml_collections.ConfigDict()
  config.encoder.name = "mobilenet_v2"
  config.encoder.weights = ""  # "" = the default location (see the encoder's load_params)
  # Input side in pixels (0 = the backbone's standard, 224 for MobileNetV2). 160 gives a 5x5
  # grid, plenty for shapes, and encodes about 2.7x faster on a CPU, so more images fit.
  config.encoder.image_size = 160
  # Pillow's bilinear, which low-pass filters when shrinking (antialiased): rendered shapes and
  # large photos keep their thin lines. "tf_bilinear" is the seed's tf.image.resize instead.
  config.encoder.resize = "pil_bilinear"
  config.encoder.batch_size = 32

  config.model = ml_collections.ConfigDict()
  # "gru" (the seed's decoder), "gru_mha" (the same GRU with multi-head attention, the
  # seed's suggested next step) or "transformer". Options of the other decoders are ignored,
  # except num_heads/key_dim/num_layers/mlp_dim where they do not apply (an error).
  config.model.decoder = "gru"
  config.model.units = 256
  config.model.num_heads = 0  # gru_mha, transformer: 0 = 4 heads
  config.model.key_dim = 0  # gru_mha, transformer: per-head size, 0 = units / num_heads
  config.model.num_layers = 0  # transformer: 0 = 2 blocks
  config.model.mlp_dim = 0  # transformer: 0 = 4 x units
  config.model.dropout = 0.1  # transformer only
  # Small-data regularisers, all off (0) by default (docs/quality.md measures them). GRUs:
  # dropout on the word embeddings, and between the GRU's output and the attention.
  config.model.embedding_dropout = 0.0
  config.model.gru_output_dropout = 0.0
  # Every decoder: dropout on the outputs before the vocabulary projection, and that
  # projection tied to the word embedding (its kernel = the embedding transposed).
  config.model.output_dropout = 0.0
  config.model.tie_embedding = False
  # GRU decoders only (the transformer always embeds grid positions).
  # Not in the seed: a learned embedding per image-grid position, added to the encoder grid.
  # Without it the seed's decoder sees no explicit position and confuses "left of"/"above"
  # (about 91% exact match on held-out shapes instead of 95%+).
  config.model.grid_position_embedding = True
  # Not in the seed either: start the GRU from the image (tanh of a Dense over the flattened
  # grid) instead of zeros. The seed's GRU only ever sees words, so no single attention read
  # can tell "left of" from "above"; this lets the decoder see the whole layout first.
  config.model.init_hidden_from_image = True
  config.model.vocab_size = 20000  # a cap; the shapes grammar has 13 words
  config.model.max_length = 16  # caption tokens incl. <start>/<end>; also the sampling limit

  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 64
  config.train.num_steps = 2000
  config.train.learning_rate = 1e-3
  config.train.lr_schedule = "cosine"  # the seed keeps 1e-3 constant ("constant")
  config.train.b1 = 0.9
  config.train.b2 = 0.999
  config.train.eps = 1e-7  # Keras's Adam default, which the seed uses
  # Trim each batch's padding to the shortest of these lengths that fits it (() = pad to
  # model.max_length, as the seed does). The loss is unchanged either way: the train step
  # also drops trailing padding columns and projects only real targets; the buckets keep
  # the number of compiled shapes small.
  config.train.length_buckets = (8, 12)
  config.train.compute_dtype = "float32"  # or "bfloat16" (float32 params and loss)
  config.train.label_smoothing = 0.0  # target (1 - eps) one-hot + eps / V; 0 = the seed's
  config.train.weight_decay = 0.0  # > 0: AdamW's decoupled decay of kernels and embeddings
  # > 0: keep an exponential moving average of the parameters (e.g. 0.999), which
  # validation, best/, sample, evaluate, export and serve then use; saved in checkpoints.
  config.train.ema_decay = 0.0
  config.train.log_every = 50
  config.train.eval_every = 250
  config.train.eval_examples = 256  # greedy exact-match on this many val examples
  config.train.checkpoint_every = 250
  config.train.keep_checkpoints = 2
  # Self-critical sequence training (jaxcap/training/scst.py): after train.num_steps cross-entropy
  # steps, this many steps that follow the CIDEr-D reward of sampled captions (0 = off).
  config.train.scst_steps = 0
  config.train.scst_batch_size = 16  # images a step (0: train.batch_size); 5 samples each
  config.train.scst_samples = 5  # sampled captions per image
  config.train.scst_baseline = "greedy"  # the greedy caption's reward, or "mean" of the others
  config.train.scst_learning_rate = 1e-4
  config.train.scst_temperature = 1.0
  config.train.scst_top_k = 0  # 0: sample from the whole vocabulary

  # The settings of each decoding method. Every tool (sample, evaluate, serve, the page,
  # Captioner.caption) decodes greedily unless asked for "sample" or "beam"; validation during
  # training is always greedy.
  config.decoding = ml_collections.ConfigDict()
  config.decoding.method = "greedy"
  config.decoding.top_k = 10  # the seed keeps the 10 largest logits and samples among them
  config.decoding.temperature = 1.0
  config.decoding.beam_size = 3
  config.decoding.alpha = 0.0  # beam length-penalty exponent
  config.decoding.seed = 0
  # Repetition rules of every method: no n-gram of this size twice in a caption (0 = off),
  # no word twice in a row.
  config.decoding.no_repeat_ngram = 0
  config.decoding.no_consecutive_repeat = False
  return config
