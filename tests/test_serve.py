"""serve.py: the HTTP API (test client), bad requests, batching under load, the page in Chromium.

A tiny model is trained once for the module (seconds). $JAXCAP_SERVE_WORKDIR serves a trained
workdir instead, and $JAXCAP_SERVE_SCREENSHOT keeps the browser test's screenshot there
(the README's docs/serve.png comes from the quickstart model that way).
"""

import collections
import concurrent.futures
import contextlib
import io
import logging
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib

import httpx2 as httpx
import numpy as np
import PIL.Image
import pytest
from helpers import (  # train.py in a subprocess from the repository root
  ROOT,
  compile_events,
  run,
  train_cmd,
)
from starlette.testclient import TestClient

from jaxcap.captioner import Captioner
from jaxcap.commands import serve as serve_py
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
  return Captioner.load(workdir)


@pytest.fixture(scope="module")
def examples(tmp_path_factory, captioner):
  """[(png path, bytes, the captioner's own greedy caption, one image at a time)]."""
  folder = tmp_path_factory.mktemp("shapes")
  rows = []
  for path, _ in shapes.write_examples(folder, seed=5, start=0, count=6):
    rows.append((str(path), open(path, "rb").read(), captioner.caption(path).text))
  return rows


@pytest.fixture(scope="module")
def client(captioner):
  app = serve.make_app(captioner, batch_sizes=SIZES, max_upload_mb=1)
  with TestClient(app, base_url="http://127.0.0.1") as c:  # a Host the server answers
    yield c


@contextlib.contextmanager
def no_compiles():
  """Fails unless nothing is traced, compiled or read from the compile cache inside."""
  with compile_events(("/jax/core/compile/", "/jax/compilation_cache/")) as events:
    yield events
  assert not events, events


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
  expected = captioner.caption(examples[0][0])
  answer = post_file(client, examples[0][1]).json()
  np.testing.assert_allclose(answer["attention"], expected.attention, atol=1e-4)


def test_padded_and_chunked_batches_caption_as_one_at_a_time(captioner, examples):
  images = np.stack([captioner.load_image(e[0]) for e in examples[:5]])
  reference = [captioner.caption(image) for image in images]
  for chunk in (4, 0):  # 5 images: encoder chunks of 4 + 1 (padded to 1), or all padded to 8
    results = captioner.caption_batch(images, DecodeOptions(), sizes=(1, 4, 8),
                                      encode_chunk=chunk)
    assert [r.text for r in results] == [r.text for r in reference] == [
        e[2] for e in examples[:5]]
    assert [r.words for r in results] == [r.words for r in reference]
    for result, r in zip(results, reference):
      np.testing.assert_allclose(result.attention, r.attention, atol=1e-5)


def test_several_files_in_order_and_raw_body(client, examples):
  with no_compiles():  # start-up compiled every shape these need
    for count in (2, 3, len(examples)):
      files = [("image", (f"{i}.png", data, "image/png")) for i, (_, data, _) in
               enumerate(examples[:count])]
      answer = client.post("/caption", files=files)
      assert answer.status_code == 200, answer.text
      assert [r["caption"] for r in answer.json()] == [e[2] for e in examples[:count]]
      assert [r["name"] for r in answer.json()] == [f"{i}.png" for i in range(count)]
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
  with no_compiles():
    seen = {caption(**hot, seed=str(s)) for s in range(5)}
    assert len(seen) > 1 and {caption(**hot, seed="1") for _ in range(2)} == {
        caption(**hot, seed="1")}
    answer = post_file(client, data, top_k="5", beam_size="4", seed="9").json()
    assert answer["decoding"] == {"method": "greedy"} and answer["caption"] == greedy


def test_fifty_new_option_values_compile_nothing(client, examples):
  """Temperatures, top_k values, alphas and seeds are data to the compiled loops, which
  start-up compiled (sampling, and beam search at its default size)."""
  data = examples[1][1]
  rng = np.random.default_rng(0)
  with no_compiles():
    for i in range(50):
      fields = ({"method": "sample", "temperature": f"{rng.uniform(0.05, 10):.4f}",
                 "top_k": str(rng.integers(0, 16)), "seed": str(rng.integers(2**31))}
                if i % 2 else {"method": "beam", "alpha": f"{rng.uniform(0, 2):.4f}"})
      answer = post_file(client, data, **fields)
      assert answer.status_code == 200, answer.text


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
      ("bomb (warning)", files(png_header(10_000, 10_000)), 413, "10000x10000"),
      ("bomb (error)", files(png_header(30_000, 30_000)), 413, "too large"),
      ("over the pixel budget", files(png_header(5_000, 4_000)), 413, "5000x4000"),
      ("over the upload limit", files(over_limit), 413, "limit"),
      ("over the limit, no length", {"content": iter([over_limit[:600_000]] * 2),
                                     "headers": {"content-type": "image/png"}}, 413, "limit"),
      ("missing field", {"files": {"seed": (None, "1")}}, 400, "missing field"),
      ("a file, but not as image", {"files": {"picture": ("x.png", good_png)}}, 400,
       "'picture' holds a file"),
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
      ("no closing boundary", {"content": b'--xyz\r\nContent-Disposition: form-data; '
                               b'name="image"; filename="a.png"\r\n\r\n' + good_png,
                               "headers": {"content-type": "multipart/form-data; boundary=xyz"}},
       400, "closing boundary"),
      ("a file under another field", {"files": [("image", ("x.png", good_png)),
                                                ("picture", ("y.png", good_png))]}, 400,
       "'picture' holds a file"),
      ("a field twice", {**files(good_png), "data": {"seed": "1"}, "params": {"seed": "2"}},
       400, "'seed' given more than once"),
      ("a 400-digit seed", {**files(good_png), "data": {"method": "sample", "seed": "9" * 400}},
       400, "seed"),
      ("a 400-digit top_k", {**files(good_png), "data": {"top_k": "9" * 400}}, 400, "top_k"),
      ("a 400-digit beam", {**files(good_png), "data": {"beam_size": "9" * 400}}, 400,
       "beam_size"),
      ("fullwidth digits", {**files(good_png), "data": {"seed": "\uff11\uff12"}}, 400,
       "seed"),
      ("underscores", {**files(good_png), "data": {"top_k": "1_0"}}, 400, "top_k"),
      ("temperature inf", {**files(good_png), "data": {"temperature": "inf"}}, 400,
       "temperature"),
      ("temperature 1e999", {**files(good_png), "data": {"temperature": "1e999"}}, 400,
       "temperature"),
      ("negative seed", {**files(good_png), "data": {"seed": "-1"}}, 400, "seed"),
  ]


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_bad_requests_get_4xx_json_and_the_server_keeps_serving(client, examples):
  good_png = examples[0][1]
  for what, kwargs, status, words in bad_requests(good_png):
    answer = client.post("/caption", **kwargs)
    assert answer.status_code == status, (what, answer.status_code, answer.text)
    assert words in answer.json()["error"], (what, answer.json())
  for path, status in (("/caption", 405), ("/nothing", 404)):
    answer = client.get(path)
    assert answer.status_code == status and "POST /caption" in answer.json()["hint"]
    assert path in answer.json()["error"]
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


@pytest.fixture(scope="module")
def model_file(captioner, tmp_path_factory):
  path = tmp_path_factory.mktemp("exported") / "model.jaxcap"
  captioner.save(path)
  return str(path)


@pytest.mark.slow
@pytest.mark.parametrize("source", ["--workdir", "--model"])
def test_serve_py_serves_until_stopped(source, workdir, model_file, examples,
                                       tmp_path_factory):
  cache = tmp_path_factory.getbasetemp() / "serve_py_cache"  # the second run reads it
  proc = subprocess.Popen(  # port 0: any free port, printed
      [sys.executable, "serve.py", source, workdir if source == "--workdir" else model_file,
       "--port", "0", "--batch_sizes", "1,2", "--cache_dir", str(cache)], cwd=ROOT,
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  lines = []
  try:
    for line in proc.stdout:
      lines.append(line)
      if "serving http://" in line:
        break
    url = lines[-1].split("serving ")[1].strip().rstrip("/")
    port = int(url.rsplit(":", 1)[1])
    assert port > 0 and url == f"http://127.0.0.1:{port}", lines
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
    evil = httpx.get(url + "/health", headers={"host": "evil.example"}, timeout=5)
    assert evil.status_code == 403
  finally:
    proc.terminate()
    output = "".join(lines) + proc.communicate(timeout=60)[0]
  # uvicorn shuts down cleanly on SIGTERM, then re-raises it (exit status -15).
  assert proc.returncode in (0, -signal.SIGTERM) and "Traceback" not in output, output[-2000:]
  assert "Application shutdown complete" in output
  # The model card's line and the default decoding, once each, before serving.
  assert output.count("decoding: greedy") == 1 and output.count("model: ") == 1, output[:2000]
  # One access line per request: status and time.
  assert re.search(r"POST /caption 200 \d+ ms", output) and " 403 " in output, output[-2000:]


@pytest.mark.parametrize("flags,words", [
    (["--port", "99999"], "--port 99999: must be an integer from 0 to 65535"),
    (["--batch_sizes", "100000"], "--batch_sizes: at most 8 sizes, each from 1 to 256"),
    (["--batch_sizes", "0,4"], "--batch_sizes"),
    (["--max_upload_mb", "nan"], "--max_upload_mb nan: must be a number > 0"),
    (["--max_upload_mb", "inf"], "--max_upload_mb"),
    (["--max_upload_mb", "0"], "--max_upload_mb"),
    (["--max_pixels", "0"], "--max_pixels 0: must be an integer from 1"),
    (["--max_wait_ms", "-1"], "--max_wait_ms"),
    (["--max_decoding", "0"], "--max_decoding"),
])
def test_serve_py_refuses_bad_flags_in_one_line(flags, words):
  result = subprocess.run([sys.executable, "serve.py"] + flags, cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
  errors = [line for line in result.stderr.splitlines() if "error" in line]
  assert result.returncode == 2 and len(errors) == 1 and words in errors[0], result.stderr
  assert "Traceback" not in result.stderr


def test_serve_py_defaults_match_the_app():
  args = serve_py.parse_args([])
  assert args.max_pixels == serve.MAX_PIXELS and args.max_decoding == serve.MAX_DECODING
  assert args.max_pixels < PIL.Image.MAX_IMAGE_PIXELS == serve_py.PILLOW_PIXEL_LIMIT


def test_page_in_headless_chromium(server, examples, captioner, tmp_path):
  from selenium import webdriver  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.common.by import By  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.support.ui import (
    Select,  # pylint: disable=g-import-not-at-top
    WebDriverWait,  # pylint: disable=g-import-not-at-top
  )

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
    assert not driver.find_element(By.ID, "again").is_displayed()  # nothing to caption yet
    summary = WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "model").text)
    assert summary == captioner.summary and "trained on synthetic shapes" in summary
    chosen = {os.path.basename(path): caption for path, _, caption in examples[3:6]}
    driver.find_element(By.ID, "files").send_keys("\n".join(e[0] for e in examples[3:6]))
    cards = WebDriverWait(driver, 60).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, ".card[data-state=done]")) == 3 and
        d.find_elements(By.CSS_SELECTOR, ".card"))
    shown = {c.find_element(By.CLASS_NAME, "name").text:
             c.find_element(By.CLASS_NAME, "caption").text for c in cards}
    assert shown == chosen
    assert driver.find_element(By.ID, "again").is_displayed()
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
    # The example button draws shapes and captions them; a new method re-captions them all.
    driver.find_element(By.ID, "example").click()
    done = "return [...document.querySelectorAll('.card')].map(c => c.dataset.state + " \
           "'/' + c.dataset.method)"
    WebDriverWait(driver, 60).until(lambda d: d.execute_script(done) == ["done/greedy"] * 4)
    assert driver.find_element(By.CLASS_NAME, "name").text == "example 1.png"
    Select(driver.find_element(By.ID, "method")).select_by_value("beam")
    WebDriverWait(driver, 60).until(lambda d: d.execute_script(done) == ["done/beam"] * 4)
    Select(driver.find_element(By.ID, "method")).select_by_value("greedy")
    WebDriverWait(driver, 60).until(lambda d: d.execute_script(done) == ["done/greedy"] * 4)
    # Each caption has a copy button.
    cards = driver.find_elements(By.CSS_SELECTOR, ".card")[1:]  # the three files
    cards[0].find_element(By.CLASS_NAME, "copy").click()
    WebDriverWait(driver, 10).until(lambda d: cards[0].get_attribute("data-copied"))
    assert cards[0].get_attribute("data-copied") == cards[0].find_element(
        By.CLASS_NAME, "caption").text
    canvas = cards[0].find_element(By.TAG_NAME, "canvas")
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


def test_host_and_origin_are_checked(client, captioner, examples):
  png = examples[0][1]
  ok = lambda answer: answer.status_code == 200  # noqa: E731
  refused = lambda answer, words: (answer.status_code == 403 and  # noqa: E731
                                   words in answer.json()["error"])
  # Another site's page posting to this server, and a DNS-rebinding name: 403.
  assert refused(client.post("/caption", files={"image": ("a.png", png)},
                             headers={"origin": "http://evil.example"}),
                 "--allow_origin http://evil.example")
  assert refused(client.get("/health", headers={"host": "evil.example"}), "--allow_host")
  assert refused(client.get("/health", headers={"origin": "null"}), "cross-origin")
  # The page's own origin, no origin (curl), and the loopback names: answered.
  assert ok(client.post("/caption", files={"image": ("a.png", png)},
                        headers={"origin": "http://127.0.0.1"}))
  for host in ("localhost", "127.0.0.1:8123", "[::1]:80", "LOCALHOST"):
    assert ok(client.get("/health", headers={"host": host})), host

  # A server that knows its port, opened to one other site and one other name.
  app = serve.make_app(captioner, port=8000, allow_origins=["http://ok.example"],
                       allow_hosts=["captions.lan"], warm=False)
  plain = TestClient(app, base_url="http://127.0.0.1:8000")  # no lifespan: /info only
  assert ok(plain.get("/info"))
  assert ok(plain.get("/info", headers={"host": "captions.lan:8000"}))
  assert refused(plain.get("/info", headers={"host": "127.0.0.1:8001"}), "Host")
  assert refused(plain.get("/info", headers={"host": "127.0.0.1:80x"}), "Host")
  opened = plain.get("/info", headers={"origin": "http://ok.example"})
  assert ok(opened) and opened.headers["access-control-allow-origin"] == "http://ok.example"
  assert refused(plain.get("/info", headers={"origin": "http://evil.example"}), "evil")
  # Listening on every address: any IP literal is fine, a name still is not.
  everywhere = TestClient(serve.make_app(captioner, host="0.0.0.0", port=8000, warm=False))
  assert ok(everywhere.get("/info", headers={"host": "192.168.1.5:8000"}))
  assert refused(everywhere.get("/info", headers={"host": "evil.example:8000"}), "Host")


def test_info_describes_the_model(client, captioner):
  info = client.get("/info").json()
  assert info["summary"] == captioner.summary  # the model card's line
  assert f"{captioner.card['vocabulary']['words']} words, {captioner.step} steps" in info[
      "summary"]
  assert (info["step"], info["decoder"], info["vocab_size"], info["decoding"]) == (
      captioner.step, captioner.spec.kind, len(captioner.vocab), {"method": "greedy"})


def test_aborted_uploads_cost_one_line_each_and_no_traceback(server, examples, caplog,
                                                             capfd):
  caplog.set_level(logging.INFO, logger="jaxcap.serve")
  host, port = server.removeprefix("http://").split(":")
  before = httpx.get(server + "/health", timeout=30).json()["disconnects"]
  for i in range(20):  # promise 1 MB, send a little, leave
    with socket.create_connection((host, int(port)), timeout=30) as s:
      head = (b"Content-Type: image/png\r\n" if i % 2 else
              b"Content-Type: multipart/form-data; boundary=b\r\n")
      s.sendall(b"POST /caption HTTP/1.1\r\nHost: " + host.encode() + b"\r\n" + head +
                b"Content-Length: 1000000\r\n\r\n--b\r\nContent-Disposition: form-data; "
                b'name="image"; filename="x.png"\r\n\r\n' + examples[0][1][:200])
      time.sleep(0.02)
  deadline = time.monotonic() + 30
  while (httpx.get(server + "/health", timeout=30).json()["disconnects"] < before + 20 and
         time.monotonic() < deadline):
    time.sleep(0.1)
  assert httpx.get(server + "/health", timeout=30).json()["disconnects"] == before + 20
  records = [r for r in caplog.records if r.name.startswith(("jaxcap", "uvicorn"))]
  assert 20 <= len(records) <= 40 and not any(r.exc_info for r in records)
  assert sum("client left during its upload" in r.getMessage() for r in records) >= 10
  assert "Traceback" not in capfd.readouterr().err


def test_access_log_is_rate_limited():
  limit = serve.RateLimit(per_s=1000, burst=5)
  record = lambda: logging.LogRecord("x", logging.INFO, "", 0, "line", (), None)  # noqa: E731
  passed = [limit.filter(record()) for _ in range(1000)]
  assert 5 <= sum(passed) < 1000  # a burst, then only what the rate refills
  time.sleep(0.05)
  after = record()
  assert limit.filter(after) and "lines left out" in after.getMessage()


FUZZ_VALUES = ["", " ", "0", "-0", "+3", "1e3", "1e999", "-1e999", "nan", "NaN", "inf",
               "-inf", "9" * 400, "1_000", "\uff11\uff12", "\u0663", "0x10", "1.5.2", ".5",
               "5.", "1e", "e5", "\x00", "\u202e1", "😀", "true", "None", "[1]", "3 ", " 3",
               "0.05", "10", "10.0000001", "2147483648", "-2147483649", "%00", "\r\n"]
FUZZ_FIELDS = ["method", "temperature", "top_k", "seed", "beam_size", "alpha", "image",
               "greedy", "", "x" * 300, "métho", "Method"]


def fuzz_request(rng, png):
  """One malformed (or odd) request as TestClient keyword arguments (+ method, path)."""
  kind = rng.integers(7)
  method, path, kwargs = "POST", "/caption", {}
  pick = lambda xs: xs[rng.integers(len(xs))]  # noqa: E731
  fields = {pick(FUZZ_FIELDS): pick(FUZZ_VALUES) for _ in range(rng.integers(1, 4))}
  fields.pop("image", None)
  if "method" in fields and rng.random() < 0.5:
    fields["method"] = pick(["greedy", "sample", "beam"])
  good = {"files": {"image": ("a.png", png, "image/png")}}
  if kind == 0:  # random bytes as the body
    kwargs = {"content": rng.bytes(int(rng.integers(0, 3000))),
              "headers": {"content-type": pick(["image/png", "application/octet-stream",
                                                "text/plain", "multipart/form-data"])}}
  elif kind == 1:  # random option strings, in the form or the query
    kwargs = {**good, ("data" if rng.random() < 0.5 else "params"): fields}
  elif kind == 2:  # a multipart body cut anywhere
    boundary = "zzz"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; "
            f"filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n").encode() + png + (
                f"\r\n--{boundary}--\r\n").encode()
    kwargs = {"content": body[:rng.integers(len(body))],
              "headers": {"content-type": f"multipart/form-data; boundary={boundary}"}}
  elif kind == 3:  # odd headers
    headers = pick([{"content-type": "multipart/form-data; boundary="},
                    {"content-type": "multipart/form-data; boundary=" + "b" * 300},
                    {"content-type": "multipart/form-data; charset=\x7f"},
                    {"content-type": "\x01\x02"}, {"origin": pick(FUZZ_VALUES) or "x"},
                    {"host": pick(FUZZ_VALUES) or "x"}, {"host": "127.0.0.1:" + "9" * 30},
                    {"accept": "*/*" * 100}, {"content-encoding": "gzip"}])
    kwargs = {"content": png, "headers": {"content-type": "image/png", **headers}}
    kwargs["headers"] = {k: v.encode("utf-8", "replace")  # raw bytes, any of them
                         for k, v in kwargs["headers"].items()}
  elif kind == 4:  # corrupted image bytes
    data = bytearray(png)
    for _ in range(rng.integers(1, 20)):
      data[rng.integers(len(data))] = rng.integers(256)
    kwargs = {"files": {"image": ("a.png", bytes(data), "image/png")}}
  elif kind == 5:  # other methods and paths
    method = pick(["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])
    path = pick(["/caption", "/", "/health", "/info", "/x", "/caption/", "/%2e%2e/etc",
                 "/" + "a" * 500])
  else:  # many fields, files under odd names
    kwargs = {"files": [(pick(FUZZ_FIELDS) or "f", ("b.png", png)) for _ in
                        range(rng.integers(1, 5))], "data": fields}
  return method, path, kwargs


def test_fuzz_malformed_requests_get_4xx_json(client, examples, caplog):
  """A seeded stream of 300 malformed requests: each answer is 200 or a 4xx with a JSON
  error, never a 500 (the test client re-raises any server exception), no traceback."""
  caplog.set_level(logging.INFO)
  rng = np.random.default_rng(20)
  png = examples[0][1]
  statuses = collections.Counter()
  for i in range(300):
    method, path, kwargs = fuzz_request(rng, png)
    answer = client.request(method, path, **kwargs)
    statuses[answer.status_code] += 1
    assert answer.status_code == 200 or 400 <= answer.status_code < 500, (i, kwargs)
    if answer.status_code >= 400 and method != "HEAD":
      assert isinstance(answer.json()["error"], str), (i, kwargs, answer.text)
  assert not any(r.exc_info for r in caplog.records)
  assert "Traceback" not in caplog.text
  assert sum(statuses.values()) == 300 and len(statuses) >= 4, statuses
  assert client.get("/health").status_code == 200
  assert post_file(client, png).json()["caption"] == examples[0][2]


def png_16bit(path, width, height):
  """A real 16-bit grayscale PNG of width x height (all black), written in slices."""
  def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data))
  compress, row = zlib.compressobj(9), b"\0" * (1 + 2 * width)
  with open(path, "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16,
                                                                0, 0, 0, 0)))
    data = b"".join(compress.compress(row * 500) for _ in range(height // 500))
    data += compress.compress(row * (height % 500)) + compress.flush()
    f.write(chunk(b"IDAT", data) + chunk(b"IEND", b""))
  return path


def test_a_16bit_9000x9900_png_is_refused_by_its_header(client, tmp_path):
  path = png_16bit(tmp_path / "big.png", 9000, 9900)
  assert PIL.Image.open(path).size == (9000, 9900)
  start = time.monotonic()
  answer = client.post("/caption", files={"image": ("big.png", path.read_bytes())})
  assert answer.status_code == 413 and "9000x9900" in answer.json()["error"]
  assert time.monotonic() - start < 5  # refused before decoding
