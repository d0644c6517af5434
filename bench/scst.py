"""Self-critical (SCST) train steps per second beside cross-entropy steps, quickstart sizes.

Quickstart shapes: 12,000 training images with their shapes-grammar captions (the CIDEr-D
corpus), 5x5x1280 features, 256 units, captions up to 16 tokens, 64 images a step. A
cross-entropy step (`training.make_train_step`) against an SCST step (`scst.Phase.step`: 5
samples per image from the while_loop sampler, the greedy captions for the baseline, CIDEr-D
on the host, one teacher-forced policy-gradient update), timed in alternation; and the share
of the SCST step spent computing rewards. The decoder is untrained, so samples run to the
length limit: the slowest case for the sampler. The features are one random grid repeated
(their content does not change the cost).

    python bench/scst.py [--quick]
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import jax  # pylint: disable=wrong-import-position,g-import-not-at-top
import numpy as np  # pylint: disable=wrong-import-position,g-import-not-at-top

from bench import common  # pylint: disable=wrong-import-position
from configs import quickstart  # pylint: disable=wrong-import-position
from jaxcap import training
from jaxcap.data import pipeline, shapes, text  # pylint: disable=wrong-import-position
from jaxcap.model import decoders  # pylint: disable=wrong-import-position
from jaxcap.training import scst

IMAGES, POSITIONS, FEATURE_DIM = 12000, 25, 1280


def setup():
  config = quickstart.get_config()
  config.train.scst_steps = 1
  captions = [[shapes.caption_of(config.data.seed, i)] for i in range(IMAGES)]
  vocab = text.Vocabulary.build([c for cs in captions for c in cs], config.model.vocab_size)
  grid = np.random.default_rng(0).normal(size=(1, POSITIONS, FEATURE_DIM)).astype(np.float16)
  features = np.broadcast_to(grid, (IMAGES, POSITIONS, FEATURE_DIM))
  data = pipeline.make_caption_set(features, captions, vocab, config.model.max_length,
                                   all_captions=False)
  spec = decoders.spec_from_config(config.model, vocab_size=len(vocab),
                                   feature_dim=FEATURE_DIM, positions=POSITIONS)
  optimizer = training.make_optimizer(config)  # the one the SCST state must match
  return config, data, vocab, spec, optimizer


def run(quick: bool = False) -> list[dict]:
  repeat = 3 if quick else 10
  config, data, vocab, spec, optimizer = setup()
  params = decoders.init(jax.random.key(0), spec)
  phases = {}
  for baseline in ("greedy", "mean"):
    config.train.scst_baseline = baseline
    phases[baseline] = scst.Phase(config, data, vocab, spec, jax.random.key(0))
  sizes = (f"quickstart: length {config.model.max_length}, units {config.model.units}, "
           f"{POSITIONS}x{FEATURE_DIM} features")
  ce_sizes = f"{sizes}, batch {config.train.batch_size} captions"
  scst_sizes = (f"{sizes}, batch {phases['mean'].batch_size} images x "
                f"{config.train.scst_samples} samples")
  train_step = training.make_train_step(optimizer, spec)
  states = {name: training.init_train_state(params, optimizer)
            for name in ("ce", "greedy", "mean")}
  counter = {"n": 0}
  # A few fixed batches, each compiled before timing: the packed step compiles one program
  # per (trimmed length, packed rows), and a fresh batch would often time a compilation.
  batches = [pipeline.train_batch(data, config.train.batch_size, 0, n,
                                  config.train.length_buckets) for n in range(4)]
  for feats, tokens in batches:
    states["ce"], metrics = train_step(states["ce"], feats, tokens)
  jax.block_until_ready(metrics)

  def ce():
    feats, tokens = batches[counter["n"] % len(batches)]
    states["ce"], metrics = train_step(states["ce"], feats, tokens)
    counter["n"] += 1
    return metrics["loss"]

  def scst_step(name):
    def fn():
      states[name], metrics = phases[name].step(states[name], counter["n"])
      return metrics["loss"]
    return fn

  t = common.interleaved({"ce": ce, "greedy": scst_step("greedy"), "mean": scst_step("mean")},
                         repeat=repeat, warmup=1)
  rows = [common.row("cross-entropy train step", ce_sizes, 1.0 / t["ce"], None, "steps/s")]
  for name in ("greedy", "mean"):
    phase = phases[name]
    steps = repeat + 1  # the reward clock also ran during the warm-up call
    share = phase.reward_seconds / steps / t[name]
    rows.append(common.row(
        f"SCST train step ({name} baseline)", scst_sizes, 1.0 / t[name], 1.0 / t["ce"], "steps/s",
        note=f"rewards {phase.reward_seconds / steps * 1e3:.1f} ms a step, about "
             f"{share:.0%} of it", reference_name="cross-entropy"))
  # The reward alone: 64 images x 5 samples against the 12,000-image corpus.
  phase = phases["mean"]
  images = np.repeat(np.arange(config.train.batch_size), 5)
  tokens = np.asarray(data.tokens[phase.rows[images]])[:, 1:]
  seconds = common.timeit(lambda: phase.reward.score_tokens(images, tokens,
                                                            end_id=vocab.end_id),
                          repeat=max(repeat, 5))
  rows.append(common.row("CIDEr-D rewards (numpy)", f"{len(images)} captions, 1 reference "
                         f"each, {IMAGES}-image corpus", len(images) / seconds, None,
                         "rewards/s"))
  return rows


if __name__ == "__main__":
  common.main(run)
