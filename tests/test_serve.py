"""serve.py: the HTTP API (test client), bad requests, batching under load, the page in Chromium.

A tiny model is trained once for the module (seconds). $JAXCAP_SERVE_WORKDIR serves a trained
workdir instead, and $JAXCAP_SERVE_SCREENSHOT keeps the browser test's screenshot there
(the README's docs/serve.png comes from the quickstart model that way).
"""

import concurrent.futures
import io
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib

import httpx2 as httpx
import jax
import numpy as np
import PIL.Image
import pytest
from starlette.testclient import TestClient
from helpers import ROOT, run, train_cmd  # train.py in a subprocess from the repository root

from jaxcap.captioner import Captioner
from jaxcap.data import shapes
from jaxcap.decoding.options import DecodeOptions
from jaxcap.serving import app as serve

pytestmark = pytest.mark.slow  # a trained workdir, a server, chromium

SIZES = (1, 4, 16)  # fewer compiled sizes than the server's default keeps start-up short


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  if os.environ.get("JAXCAP_SERVE_WORKDIR"):
    return os.environ["JAXCAP_SERVE_WORKDIR"]
  workdir = tmp_path_factory.mktemp("serve_run")
  result = run(train_cmd(workdir, "--config.train.num_steps=8"))
  assert result.returncode == 0, result.stderr[-3000:]
  return str(workdir)


@pytest.fixture(scope="module")
def captioner(workdir):
  return Captioner(workdir)


@pytest.fixture(scope="module")
def examples(tmp_path_factory, captioner):
  """[(png path, bytes, the captioner's own greedy caption, one image at a time)]."""
  folder = tmp_path_factory.mktemp("shapes")
  rows = []
  for path, _ in shapes.write_examples(folder, seed=5, start=0, count=6):
    image = captioner.load_image(path)
    captions, _, _ = captioner.caption(image[None], jax.random.key(0), DecodeOptions())
    rows.append((str(path), open(path, "rb").read(), captions[0]))
  return rows


@pytest.fixture(scope="module")
def client(captioner):
  app = serve.make_app(captioner, batch_sizes=SIZES, max_upload_mb=1)
  with TestClient(app) as c:
    yield c


@pytest.fixture(scope="module")
def server(captioner):
  with serve.running(serve.make_app(captioner, batch_sizes=SIZES)) as url:
    yield url


def post_file(client, data, name="a.png", **fields):
  return client.post("/caption", files={"image": (name, data, "image/png")}, data=fields)


def test_caption_matches_the_model_called_directly(client, captioner, examples):
  for path, data, expected in examples:
    answer = post_file(client, data, os.path.basename(path))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["caption"] == expected and body["name"] == os.path.basename(path)
    assert " ".join(body["words"]) == body["caption"]
    attention = np.array(body["attention"])
    assert body["grid"] == [5, 5] and attention.shape == (len(body["words"]), 25)
    np.testing.assert_allclose(attention.sum(-1), 1.0, atol=1e-3)  # softmax rows
    assert body["decoding"] == {"method": "greedy"}
  # The attention is the model's own, not any (B, L, P) array.
  image = captioner.load_image(examples[0][0])
  _, words, attention = captioner.caption(image[None], jax.random.key(0), DecodeOptions())
  answer = post_file(client, examples[0][1]).json()
  np.testing.assert_allclose(answer["attention"], attention[0, :len(words[0])], atol=1e-4)


def test_padded_and_chunked_batches_caption_as_one_at_a_time(captioner, examples):
  images = np.stack([captioner.load_image(e[0]) for e in examples[:5]])
  reference = [captioner.caption(image[None], jax.random.key(0), DecodeOptions())
               for image in images]
  for chunk in (4, 0):  # 5 images: encoder chunks of 4 + 1 (padded to 1), or all padded to 8
    captions, words, attention = serve.caption_batch(captioner, images, DecodeOptions(),
                                                     (1, 4, 8), encode_chunk=chunk)
    assert captions == [r[0][0] for r in reference] == [e[2] for e in examples[:5]]
    assert words == [r[1][0] for r in reference] and attention.shape[0] == 5
    np.testing.assert_allclose(attention, np.concatenate([r[2] for r in reference]),
                               atol=1e-5)


def test_several_files_in_order_and_raw_body(client, examples):
  compiled_programs = lambda: (serve._extract_features._cache_size(),  # noqa: E731
                               serve.decoding.decode_jit._cache_size())
  compiled = compiled_programs()
  for count in (2, 3, len(examples)):  # start-up compiled every shape these need
    files = [("image", (f"{i}.png", data, "image/png")) for i, (_, data, _) in
             enumerate(examples[:count])]
    answer = client.post("/caption", files=files)
    assert answer.status_code == 200, answer.text
    assert [r["caption"] for r in answer.json()] == [e[2] for e in examples[:count]]
    assert [r["name"] for r in answer.json()] == [f"{i}.png" for i in range(count)]
  assert compiled_programs() == compiled
  for kind in ("image/png", "application/x-www-form-urlencoded"):  # the latter: curl -d
    raw = client.post("/caption", content=examples[1][1], headers={"content-type": kind})
    assert raw.status_code == 200 and raw.json()["caption"] == examples[1][2]


def test_decoding_options_reach_the_model(client, examples):
  data, greedy = examples[2][1], examples[2][2]
  # Sampling among the top 1 is greedy; a cold temperature over the whole vocabulary too;
  # so is a beam of width 1.
  for fields in ({"method": "sample", "top_k": "1", "temperature": "1.5", "seed": "3"},
                 {"method": "sample", "top_k": "0", "temperature": "0.05"},
                 {"method": "beam", "beam_size": "1"}):
    body = post_file(client, data, **fields).json()
    assert body["caption"] == greedy, fields
  assert body["decoding"] == {"method": "beam", "beam_size": 1, "alpha": 0.0}
  wide = post_file(client, data, method="beam", beam_size="3", alpha="0.5").json()
  assert wide["decoding"] == {"method": "beam", "beam_size": 3, "alpha": 0.5}
  assert len(wide["attention"]) == len(wide["words"]) > 0
  # Hot sampling over the whole vocabulary, in the query string: the seed decides, and a
  # new seed compiles nothing new; nor do the fields a method does not read.
  hot = {"method": "sample", "top_k": "0", "temperature": "10"}
  caption = lambda **params: client.post(  # noqa: E731
      "/caption", params=params, files={"image": ("a.png", data)}).json()["caption"]
  seen = {caption(**hot, seed="0")}
  compiled = serve.decoding.decode_jit._cache_size()
  seen |= {caption(**hot, seed=str(s)) for s in range(1, 5)}
  assert len(seen) > 1 and {caption(**hot, seed="1") for _ in range(2)} == {caption(**hot,
                                                                                  seed="1")}
  answer = post_file(client, data, top_k="5", beam_size="4", seed="9").json()
  assert answer["decoding"] == {"method": "greedy"} and answer["caption"] == greedy
  assert serve.decoding.decode_jit._cache_size() == compiled


def png_header(width, height):
  """A PNG that claims width x height pixels (no pixel data): a decompression bomb's header."""
  def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data))
  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2,
                                                                  0, 0, 0)) +
          chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def bad_requests(good_png):
  """(what, request kwargs, expected status, words the error must contain)."""
  files = lambda data: {"files": {"image": ("x.png", data, "image/png")}}  # noqa: E731
  over_limit = os.urandom(1024 * 1024 + 10)
  return [
      ("not an image", files(b"hello, I am text"), 400, "not an image"),
      ("empty file", files(b""), 400, "empty"),
      ("truncated", files(good_png[:len(good_png) // 2]), 400, "truncated"),
      # Between Pillow's warning and error limits, and past its error limit.
      ("bomb (warning)", files(png_header(10_000, 10_000)), 400, "too large"),
      ("bomb (error)", files(png_header(30_000, 30_000)), 400, "too large"),
      ("over the upload limit", files(over_limit), 413, "limit"),
      ("over the limit, no length", {"content": iter([over_limit[:600_000]] * 2),
                                     "headers": {"content-type": "image/png"}}, 413, "limit"),
      ("missing field", {"files": {"picture": ("x.png", good_png)}}, 400, "missing field"),
      ("text instead of a file", {"data": {"image": "x"}, "files": {"other": b"y"}}, 400,
       "must be a file"),
      ("no body", {}, 400, "missing image"),
      ("unknown option", {**files(good_png), "data": {"beam": "3"}}, 400, "unknown"),
      ("unknown method", {**files(good_png), "data": {"method": "nucleus"}}, 400, "method"),
      ("temperature 0", {**files(good_png), "params": {"temperature": "0"}}, 400,
       "temperature"),
      ("temperature nan", {**files(good_png), "data": {"temperature": "nan"}}, 400,
       "temperature"),
      ("top_k past the vocabulary", {**files(good_png), "data": {"top_k": "100000"}}, 400,
       "top_k"),
      ("top_k not a number", {**files(good_png), "data": {"top_k": "ten"}}, 400,
       "integer"),
      ("beam of 0", {**files(good_png), "data": {"method": "beam", "beam_size": "0"}}, 400,
       "beam_size"),
      ("vast beam", {**files(good_png), "data": {"method": "beam", "beam_size": "500"}}, 400,
       "beam_size"),
      ("broken multipart", {"content": b"--xyz\r\nnonsense", "headers": {
          "content-type": "multipart/form-data; boundary=xyz"}}, 400, ""),
  ]


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_bad_requests_get_4xx_json_and_the_server_keeps_serving(client, examples):
  good_png = examples[0][1]
  for what, kwargs, status, words in bad_requests(good_png):
    answer = client.post("/caption", **kwargs)
    assert answer.status_code == status, (what, answer.status_code, answer.text)
    assert words in answer.json()["error"], (what, answer.json())
  assert client.get("/caption").status_code == 405
  assert "error" in client.get("/nothing").json()
  assert client.get("/health").status_code == 200
  assert post_file(client, good_png).json()["caption"] == examples[0][2]


def test_page_is_self_contained(client):
  page = client.get("/")
  assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
  assert "<canvas" in page.text and 'type="file"' in page.text
  assert "http" not in page.text.replace("http-equiv", "")  # nothing from elsewhere


def test_batcher_groups_by_options_up_to_the_largest_size():
  calls = []

  def fn(images, options):
    calls.append((images.shape[0], options))
    time.sleep(0.05)
    return [(float(image[0, 0, 0]), options.method) for image in images]

  batcher = serve.Batcher(fn, sizes=(1, 4, 8), max_wait_s=0.05)
  greedy, sample = DecodeOptions(), DecodeOptions(method="sample")
  try:
    with batcher.expecting():  # a request on its way: the worker waits for its images
      futures = [batcher.submit(np.full((2, 2, 3), i, np.float32), greedy if i % 3 else sample)
                 for i in range(11)]
      time.sleep(0.01)
    results = [f.result(timeout=30) for f in futures]
    assert results == [(float(i), "greedy" if i % 3 else "sample") for i in range(11)]
    assert sorted(calls, key=str) == sorted([(7, greedy), (4, sample)], key=str)
    assert dict(batcher.batch_sizes) == {7: 1, 4: 1}
    # Nobody on the way: a lone image waits for no one, however long max_wait_s is.
    batcher.max_wait_s = 30
    start = time.monotonic()
    assert batcher.submit(np.full((2, 2, 3), 7, np.float32), greedy).result(30)[0] == 7.0
    assert time.monotonic() - start < 10 and calls[-1] == (1, greedy)
  finally:
    batcher.close()


def test_load_from_16_concurrent_clients(server, examples):
  """200 requests, 16 at a time, over real sockets: every answer right, batches formed."""
  def one(i):
    _, data, expected = examples[i % len(examples)]
    with httpx.Client(base_url=server, timeout=120) as http:
      answer = http.post("/caption", files={"image": ("x.png", data, "image/png")})
    return answer.status_code, answer.json().get("caption"), expected

  with concurrent.futures.ThreadPoolExecutor(16) as pool:
    results = list(pool.map(one, range(200)))
  assert [r[0] for r in results] == [200] * 200
  assert all(caption == expected for _, caption, expected in results)
  health = httpx.get(server + "/health", timeout=30)
  assert health.status_code == 200
  calls = {int(k): v for k, v in health.json()["calls"].items()}
  assert sum(k * v for k, v in calls.items()) >= 200 and max(calls) > 1  # batched


def test_a_stalled_upload_holds_no_one(server, examples):
  host, port = server.removeprefix("http://").split(":")
  stalled = socket.create_connection((host, int(port)), timeout=30)
  try:  # promises 1 MB, sends 100 bytes, then nothing
    stalled.sendall(b"POST /caption HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                    b"Content-Length: 1000000\r\n\r\n" + b"\x89PNG" * 25)
    start = time.monotonic()
    answer = httpx.post(server + "/caption", timeout=60,
                        files={"image": ("x.png", examples[3][1], "image/png")})
    assert answer.status_code == 200 and answer.json()["caption"] == examples[3][2]
    assert time.monotonic() - start < 20
  finally:
    stalled.close()
  assert httpx.get(server + "/health", timeout=30).status_code == 200


def test_serve_py_serves_until_stopped(workdir, examples, tmp_path):
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  proc = subprocess.Popen(
      [sys.executable, "serve.py", "--workdir", workdir, "--port", str(port), "--batch_sizes",
       "1,2", "--cache_dir", str(tmp_path / "cache")], cwd=ROOT, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True)
  url = f"http://127.0.0.1:{port}"
  try:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
      try:
        if httpx.get(url + "/health", timeout=5).status_code == 200:
          break
      except httpx.TransportError:
        time.sleep(0.2)
    health = httpx.get(url + "/health", timeout=5).json()
    assert health["batch_sizes"] == [1, 2] and health["image_size"] == 160
    answer = httpx.post(url + "/caption", files={"image": ("x.png", examples[0][1])}, timeout=60)
    assert answer.json()["caption"] == examples[0][2]
  finally:
    proc.terminate()
    output = proc.communicate(timeout=60)[0]
  # uvicorn shuts down cleanly on SIGTERM, then re-raises it (exit status -15).
  assert proc.returncode in (0, -signal.SIGTERM) and "Traceback" not in output, output[-2000:]
  assert f"serving http://127.0.0.1:{port}/" in output
  assert "Application shutdown complete" in output


def test_page_in_headless_chromium(server, examples, tmp_path):
  from selenium import webdriver  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.common.by import By  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.support.ui import WebDriverWait  # pylint: disable=g-import-not-at-top

  options = webdriver.ChromeOptions()
  options.binary_location = shutil.which("chromium")
  for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
               "--window-size=1100,760"):
    options.add_argument(flag)
  # Debian's chromedriver: Selenium Manager never downloads a browser or a driver.
  service = webdriver.ChromeService(executable_path=shutil.which("chromedriver"))
  driver = webdriver.Chrome(options=options, service=service)
  try:
    driver.get(server + "/")
    chosen = {os.path.basename(path): caption for path, _, caption in examples[3:6]}
    driver.find_element(By.ID, "files").send_keys("\n".join(e[0] for e in examples[3:6]))
    cards = WebDriverWait(driver, 60).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, ".card[data-state=done]")) == 3 and
        d.find_elements(By.CSS_SELECTOR, ".card"))
    shown = {c.find_element(By.CLASS_NAME, "name").text:
             c.find_element(By.CLASS_NAME, "caption").text for c in cards}
    assert shown == chosen
    card = cards[0]
    expected = chosen[card.find_element(By.CLASS_NAME, "name").text]
    words = card.find_elements(By.CLASS_NAME, "word")
    assert [w.text for w in words] == expected.split()
    canvas = card.find_element(By.TAG_NAME, "canvas")
    pixels = "return arguments[0].toDataURL()"
    assert canvas.get_attribute("data-word") == "0"  # the first word's attention is drawn
    with_overlay = driver.execute_script(pixels, canvas)
    words[0].click()  # clicking the selected word clears the overlay
    assert canvas.get_attribute("data-word") == "-1"
    plain = driver.execute_script(pixels, canvas)
    words[-1].click()
    last = driver.execute_script(pixels, canvas)
    assert len({with_overlay, plain, last}) == 3
    for c in cards:  # for the screenshot: each card shows its second word's attention
      c.find_elements(By.CLASS_NAME, "word")[1].click()
    assert canvas.get_attribute("data-word") == "1"
    driver.execute_script("window.scrollTo(0, 0)")
    shot = tmp_path / "serve.png"
    assert driver.save_screenshot(str(shot))
    if os.environ.get("JAXCAP_SERVE_SCREENSHOT"):
      shutil.copy(shot, os.environ["JAXCAP_SERVE_SCREENSHOT"])
  finally:
    driver.quit()
  assert PIL.Image.open(io.BytesIO(shot.read_bytes())).size[0] > 500
