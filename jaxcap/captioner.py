"""A trained captioner loaded from a workdir: images in, captions out."""

from __future__ import annotations

import sys

import jax
import ml_collections
import numpy as np

from jaxcap import decoding
from jaxcap.data import image_files, text
from jaxcap.model import decoders, encoders
from jaxcap.training import checkpoints


def restore_params(workdir: str, checkpoint: str | int | None = None):
  """(decoder params, checkpoint meta, step) of one of a workdir's checkpoints.

  `checkpoint`: "best" (by validation CIDEr, in <workdir>/best), "latest", a step number, or
  None: best when there is one, else latest. A damaged checkpoint is skipped for the next one
  (newest first, best before latest), with a line on stderr; a step number asked for by name
  must restore. Says on stderr which checkpoint was loaded.
  """
  managers = {kind: checkpoints.Checkpoints(workdir, read_only=True, kind=kind)
              for kind in (checkpoints.BEST, checkpoints.LATEST)}
  try:
    if not any(m.steps() for m in managers.values()):
      raise FileNotFoundError(
          f"no trained model in {workdir!r} (no checkpoints there); train one first, e.g. "
          f"`python train.py --config configs/quickstart.py --workdir {workdir}`")
    kinds = {None: (checkpoints.BEST, checkpoints.LATEST), "best": (checkpoints.BEST,),
             "latest": (checkpoints.LATEST,)}.get(checkpoint, (checkpoints.LATEST,
                                                               checkpoints.BEST))
    if isinstance(checkpoint, str) and not managers[kinds[0]].steps():
      raise FileNotFoundError(f"no {checkpoint} checkpoint in {workdir!r} ({kinds[0]}/ is "
                              "empty; best/ is written only by runs that validate)")
    if isinstance(checkpoint, int) and not any(checkpoint in m.steps()
                                               for m in managers.values()):
      listed = "; ".join(f"{kind}/: {', '.join(map(str, m.steps())) or 'none'}"
                         for kind, m in managers.items())
      raise FileNotFoundError(f"no checkpoint of step {checkpoint} in {workdir!r} ({listed})")
    for manager in (managers[kind] for kind in kinds):
      steps = [checkpoint] if isinstance(checkpoint, int) else None
      if steps and checkpoint not in manager.steps():
        continue
      step, found = manager.newest_readable(
          lambda s, m=manager: (m.restore_params(s), m.restore_meta(s)), steps)
      if found is not None:
        params, meta = found
        cider = f", validation CIDEr {meta['val_cider']:.4g}" if "val_cider" in meta else ""
        print(f"loaded {manager.step_dir(step)} (step {step}{cider})", file=sys.stderr)
        return jax.device_put(params), meta, step  # restored as NumPy: moved to device once
    raise checkpoints.UnreadableCheckpointError(
        f"no readable checkpoint in {workdir!r} (see the warnings above)")
  finally:
    for manager in managers.values():
      manager.close()


class Captioner:
  """Everything `sample.py` needs, restored from a workdir's checkpoint (see restore_params).

  Attributes: `config`, `vocab`, `encoder` (module), `encoder_params`, `params` and `spec`
  (the decoder), `options` (the config's decoding options, the default of `caption`).
  """

  def __init__(self, workdir: str, checkpoint: str | int | None = None):
    self.params, meta, self.step = restore_params(workdir, checkpoint)
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
    (S, S, 3) float32 in [0, 1], resized the config's way. Raises image_files.ImageError."""
    return image_files.load_image(path, self.image_size,
                             image_files.resize_method_of(self.config.encoder))

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
    return ([self.vocab.to_text(row) for row in tokens],
            [self.vocab.words(row) for row in tokens], np.asarray(attention))
