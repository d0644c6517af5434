"""A trained captioner loaded from a workdir: images in, captions out."""

from __future__ import annotations


import jax
import ml_collections
import numpy as np

from jaxcap import checkpoints, decoders, decoding, encoders, images, text, training


def restore_params(workdir: str, step: int | None = None, kind: str = checkpoints.LATEST):
  """(decoder params, checkpoint meta, step) of a workdir's latest (or given) checkpoint."""
  from jaxcap import trainer  # pylint: disable=g-import-not-at-top
  ckpt = checkpoints.Checkpoints(workdir, read_only=True, kind=kind)
  try:
    if ckpt.latest_step() is None:
      raise FileNotFoundError(
          f"no trained model in {workdir!r} (no checkpoints there); train one first, e.g. "
          f"`python train.py --config configs/quickstart.py --workdir {workdir}`")
    meta = ckpt.restore_meta(step)
    spec = decoders.spec_from_meta(meta)
    template = training.init_state(decoders.init(jax.random.key(0), spec),
                                   trainer.make_optimizer(ml_collections.ConfigDict(
                                       meta["config"])))
    state, _ = ckpt.restore(template, step)
  finally:
    ckpt.close()
  return state.params, meta, int(state.step)


class Captioner:
  """Everything `sample.py` needs, restored from the latest checkpoint of a workdir.

  Attributes: `config`, `vocab`, `encoder` (module), `encoder_params`, `params` and `spec`
  (the decoder), `options` (the config's decoding options, the default of `caption`).
  """

  def __init__(self, workdir: str, step: int | None = None, kind: str = checkpoints.LATEST):
    self.params, meta, self.step = restore_params(workdir, step, kind)
    self.spec = decoders.spec_from_meta(meta)
    self.config = ml_collections.ConfigDict(meta["config"])
    self.options = decoding.DecodeOptions.from_config(self.config)
    self.vocab = text.Vocabulary(meta["vocab"])
    self.encoder = encoders.get(meta["encoder"])
    self.encoder_params = self.encoder.load_params(self.config.encoder.weights or None)

  @property
  def image_size(self) -> int:
    return encoders.image_size(self.config.encoder)

  def load_image(self, path) -> np.ndarray:
    """An image file (a path or a binary file object) as the encoder saw images in training:
    (S, S, 3) float32 in [0, 1], resized the config's way. Raises images.ImageError."""
    return images.load_image(path, self.image_size,
                             encoders.resize_method(self.config.encoder))

  def caption(self, images: np.ndarray, key: jax.Array,
              options: decoding.DecodeOptions | None = None, max_length: int | None = None):
    """Images (B, S, S, 3) float32 in [0, 1] -> (captions, words, attention (B, L, P)).

    `words[b]` lists caption b's generated tokens before `<end>`; `attention[b, i]` is the
    grid attention that produced `words[b][i]`. `options` default to the training config's
    `decoding` section (the seed's top-10 sampling).
    """
    tokens, attention, _ = decoding.caption_images(
        self.encoder.features, self.encoder_params, self.params, self.spec, images, key,
        options or self.options, start_id=self.vocab.start_id, end_id=self.vocab.end_id,
        max_length=max_length or self.config.model.max_length)
    tokens = np.asarray(tokens)
    return ([self.vocab.decode(row) for row in tokens],
            [self.vocab.words(row) for row in tokens], np.asarray(attention))
