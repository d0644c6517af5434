"""jaxcap.Captioner: every image form captions as its file does; bad input is a ValueError.

A randomly initialised decoder over the real MobileNetV2 (64 px: a 2 x 2 grid) is built in
memory: untrained, but deterministic and sensitive to its input, so equal captions, words and
log-probabilities across forms mean the forms reached the encoder as the same pixels.
"""

import jax
import numpy as np
import PIL.Image
import pytest
from helpers import compile_events

from jaxcap import Captioner
from jaxcap.captioner import Caption
from jaxcap.data import shapes
from jaxcap.data.text import Vocabulary
from jaxcap.model import decoders

SIZE = 64
WORDS = ["a", "red", "blue", "green", "circle", "square", "triangle", "left", "of", "above"]


@pytest.fixture(scope="module")
def captioner():
  vocab = Vocabulary(["", "[UNK]", "<start>", "<end>"] + WORDS)
  spec = decoders.DecoderSpec(kind="gru", vocab_size=len(vocab), units=32, feature_dim=1280,
                              positions=4, max_length=8, grid_position_embedding=True,
                              init_hidden_from_image=True)
  return Captioner(decoders.init(jax.random.key(3), spec), spec, vocab, "mobilenet_v2",
                   image_size=SIZE, resize_method="pil_bilinear")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  folder = tmp_path_factory.mktemp("shapes")
  return [str(path) for path, _ in shapes.write_examples(folder, seed=5, start=0, count=4)]


def same(a: Caption, b: Caption):
  assert a.text == b.text and a.words == b.words
  assert a.log_prob == pytest.approx(b.log_prob, abs=1e-4)  # batch sizes: float noise
  np.testing.assert_allclose(a.attention, b.attention, atol=1e-4)


def test_one_path_gives_one_caption(captioner, files):
  result = captioner.caption(files[0])
  assert isinstance(result, Caption) and str(result) == result.text
  # words: every generated token before <end> (an untrained model also says <start>)
  assert [w for w in result.words if w not in ("", "<start>")] == result.text.split()
  assert 1 <= len(result.words) <= 8
  assert result.attention.shape == (len(result.words), 4)
  np.testing.assert_allclose(result.attention.sum(-1), 1.0, atol=1e-4)  # softmax rows
  assert result.log_prob < 0


@pytest.mark.slow
def test_every_form_captions_as_the_path(captioner, files):
  by_path = [captioner.caption(path) for path in files]
  assert len({r.log_prob for r in by_path}) > 1  # the images do differ for this model
  for path, expected in zip(files, by_path):
    rgb = np.asarray(PIL.Image.open(path).convert("RGB"))  # 128 x 128, not the model's 64
    grey_rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], -1)
    for form in (PIL.Image.open(path), rgb, rgb / 255.0, (rgb / 255.0).astype(np.float32),
                 grey_rgba, jax.numpy.asarray(rgb)):
      same(captioner.caption(form), expected)
    same(captioner.caption(rgb[None])[0], expected)
  # Lists and batches: one result each, in order, whatever the padding.
  arrays = [np.asarray(PIL.Image.open(p).convert("RGB")) for p in files]  # sizes differ
  for results in (captioner.caption(files), captioner.caption(arrays),
                  captioner.caption([files[0], arrays[1], PIL.Image.open(files[2]),
                                     arrays[3][None]])):
    assert len(results) == len(files)
    for got, expected in zip(results, by_path):
      same(got, expected)
  batch = captioner.caption(np.stack([arrays[1]] * 3))
  assert len(batch) == 3 and all(same(got, by_path[1]) is None for got in batch)
  assert captioner.caption([]) == []


def test_grey_and_transparent_images(captioner, files, tmp_path):
  rgb = np.asarray(PIL.Image.open(files[0]).convert("RGB"))
  grey = np.asarray(PIL.Image.fromarray(rgb).convert("L"))
  grey_file = tmp_path / "grey.png"
  PIL.Image.fromarray(grey).save(grey_file)
  same(captioner.caption(grey[..., None]), captioner.caption(str(grey_file)))
  # RGBA: composited over white, as an RGBA file is.
  alpha = np.zeros(rgb.shape[:2] + (1,), np.uint8)
  alpha[:64] = 255
  rgba = np.concatenate([rgb, alpha], -1)
  rgba_file = tmp_path / "rgba.png"
  PIL.Image.fromarray(rgba, "RGBA").save(rgba_file)
  same(captioner.caption(rgba), captioner.caption(str(rgba_file)))


def test_a_float_image_at_the_model_size_is_used_as_it_is(captioner, files):
  prepared = captioner.prepare(files[0])
  assert prepared.shape == (SIZE, SIZE, 3) and prepared.dtype == np.float32
  same(captioner.caption(prepared), captioner.caption(files[0]))
  # caption_batch: what a server passes (decoded uint8 arrays of any size, or prepared ones).
  rgb = np.asarray(PIL.Image.open(files[1]).convert("RGB"))
  results = captioner.caption_batch([prepared, rgb], captioner.options, sizes=(1, 4))
  same(results[0], captioner.caption(files[0]))
  same(results[1], captioner.caption(files[1]))


@pytest.mark.slow
def test_greedy_needs_no_key_and_sampling_takes_a_seed(captioner, files):
  assert captioner.options.method == "greedy"
  one = captioner.caption(files[0], method="sample", seed=1, top_k=0)
  again = captioner.caption(files[0], method="sample", seed=1, top_k=0)
  same(one, again)
  seeds = {captioner.caption(files[0], method="sample", seed=s, top_k=0).text
           for s in range(6)}
  assert len(seeds) > 1  # the seed is used
  with pytest.raises(ValueError, match="unknown decoding option 'temprature'"):
    captioner.caption(files[0], temprature=0.5)


@pytest.mark.slow
def test_new_batch_sizes_reuse_the_compiled_sizes(captioner, files):
  arrays = [np.asarray(PIL.Image.open(p).convert("RGB")) for p in files]
  captioner.caption(arrays[:3])  # compiles size 4
  with compile_events() as events:
    captioner.caption(arrays[:4])
    captioner.caption(arrays[:3])
  assert events == []


@pytest.mark.parametrize("bad, words", [
    (np.zeros((8, 8), np.uint8), "rank 2"),
    (np.zeros((2, 2, 8, 8, 3), np.uint8), "rank 5"),
    (np.zeros((8, 8, 2), np.uint8), "2 channels"),
    (np.zeros((8, 8, 5), np.uint8), "5 channels"),
    (np.full((8, 8, 3), 2.0), "values 2..2"),
    (np.full((8, 8, 3), -0.5, np.float32), "values -0.5..-0.5"),
    (np.full((8, 8, 3), np.nan), "NaN"),
    (np.zeros((8, 8, 3), np.int64), "dtype int64"),
    (np.zeros((8, 8, 3), bool), "dtype bool"),
    (np.zeros((0, 8, 3), np.uint8), "empty"),
    (3, "type int"),
    ([np.zeros((8, 8, 3), np.uint8), None], "missing.png: no such file")])
def test_bad_input_is_one_value_error_naming_it(captioner, bad, words, tmp_path):
  if isinstance(bad, list):  # a missing file inside a list: the file's own error
    bad = [bad[0], str(tmp_path / "missing.png")]
  with pytest.raises(ValueError, match="accepted|no such file|empty") as error:
    captioner.caption(bad)
  message = str(error.value)
  assert words in message and "\n" not in message

