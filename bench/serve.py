"""serve.py under load: captions/s and latency with request batching vs one image per call.

Two servers of the same workdir run as subprocesses on 127.0.0.1: serve.py as shipped
(batch sizes 1,4,8,16,32, 5 ms gathering) and serve.py with `--batch_sizes 1 --max_wait_ms 0`
(every image its own compiled call). For 1, 8 and 32 concurrent clients (asyncio tasks, each
with its own keep-alive connection, each posting shapes PNGs one after another), both servers
get the same bounded number of requests, in alternating rounds, so load from other processes
on a shared machine hits both alike. Greedy decoding; every answer must be 200. Then, in
this process without HTTP, the model call alone (`Captioner.caption_batch`) per image at batch
1 and 16, with the encoder on chunks of 4 (the CPU default) and on the whole batch.

    python bench/serve.py --workdir workdirs/quickstart [--quick]

Writes bench/serve.md and bench/serve.json, and replaces the table in docs/benchmarks.md.

    python bench/serve.py --workdir W --option_churn [--before OLD_CHECKOUT]

measures instead greedy latency while another client keeps sending new decoding option
values (a new sampling temperature or top_k, or a new beam alpha, every request): with the
options as data nothing compiles, where before each new value compiled on the model thread.
`--before` names a checkout of an earlier jaxcap (e.g. `git archive cdc158e | tar -x -C
DIR`) whose serve.py runs alongside, in alternating rounds. Writes bench/serve_options.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import httpx2 as httpx  # pylint: disable=wrong-import-position,g-import-not-at-top

from bench import common  # pylint: disable=wrong-import-position
from jaxcap.data import shapes  # pylint: disable=wrong-import-position

CLIENTS = (1, 8, 32)
SERVERS = {"batched": [], "one image per call": ["--batch_sizes", "1", "--max_wait_ms", "0"]}


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def start(workdir: str, extra: list[str], log) -> tuple[subprocess.Popen, str]:
  port = _free_port()
  proc = subprocess.Popen([sys.executable, os.path.join(common.ROOT, "serve.py"), "--workdir",
                           workdir, "--port", str(port)] + extra, cwd=common.ROOT,
                          stdout=log, stderr=subprocess.STDOUT)
  return proc, f"http://127.0.0.1:{port}"


def wait_healthy(proc: subprocess.Popen, url: str, timeout_s: float = 900) -> dict:
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline:
    if proc.poll() is not None:
      raise RuntimeError(f"server exited with {proc.returncode}")
    try:
      answer = httpx.get(url + "/health", timeout=5)
      if answer.status_code == 200:
        return answer.json()
    except httpx.TransportError:
      pass
    time.sleep(0.5)
  raise RuntimeError("server not healthy in time")


async def _load(url: str, images: list[bytes], clients: int, requests: int):
  """`requests` POSTs from `clients` concurrent clients -> (seconds, latencies)."""
  latencies = []
  counter = iter(range(requests))

  async def client():
    async with httpx.AsyncClient(base_url=url, timeout=300) as http:
      for i in counter:
        start = time.perf_counter()
        answer = await http.post("/caption", files={
            "image": ("x.png", images[i % len(images)], "image/png")})
        latencies.append(time.perf_counter() - start)
        if answer.status_code != 200:
          raise RuntimeError(f"{answer.status_code}: {answer.text}")

  start = time.perf_counter()
  await asyncio.gather(*(client() for _ in range(clients)))
  return time.perf_counter() - start, latencies


def _calls(url: str) -> dict:
  return {int(k): v for k, v in httpx.get(url + "/health", timeout=30).json()["calls"].items()}


def measure(urls: dict, images: list[bytes], clients: int, requests: int, rounds: int):
  """Per server: captions/s (over all rounds), p50/p99 latency, mean images per call."""
  out = {name: {"seconds": 0.0, "latencies": [], "calls": 0, "images": 0} for name in urls}
  for _ in range(rounds):
    for name, url in urls.items():
      before = _calls(url)
      seconds, latencies = asyncio.run(_load(url, images, clients, requests))
      after = _calls(url)
      out[name]["seconds"] += seconds
      out[name]["latencies"] += latencies
      out[name]["calls"] += sum(after.values()) - sum(before.values())
      out[name]["images"] += (sum(k * v for k, v in after.items()) -
                              sum(k * v for k, v in before.items()))
  results = {}
  for name, o in out.items():
    q = statistics.quantiles(o["latencies"], n=100, method="inclusive")
    results[name] = {"captions_per_s": len(o["latencies"]) / o["seconds"],
                     "p50_ms": 1000 * statistics.median(o["latencies"]),
                     "p99_ms": 1000 * q[98], "mean_batch": o["images"] / max(o["calls"], 1),
                     "requests": len(o["latencies"])}
  return results


async def _churn(url: str, images: list[bytes], seconds: float, clients: int, counter):
  """`clients` greedy clients and one client sending a new option value each request, for
  `seconds` -> (greedy latencies, churn latencies)."""
  greedy, churn = [], []
  deadline = time.perf_counter() + seconds

  async def post(http, fields, out):
    start = time.perf_counter()
    answer = await http.post("/caption", data=fields, files={
        "image": ("x.png", images[len(out) % len(images)], "image/png")})
    if answer.status_code != 200:
      raise RuntimeError(f"{answer.status_code}: {answer.text}")
    out.append(time.perf_counter() - start)

  async def greedy_client():
    async with httpx.AsyncClient(base_url=url, timeout=300) as http:
      while time.perf_counter() < deadline:
        await post(http, {}, greedy)

  async def churn_client():
    async with httpx.AsyncClient(base_url=url, timeout=300) as http:
      while time.perf_counter() < deadline:
        i = next(counter)  # never the same value twice, in any round or server
        fields = [{"method": "sample", "temperature": f"{1 + i / 1000:.3f}", "seed": str(i)},
                  {"method": "sample", "top_k": str(1 + i % 12), "temperature": "0.9"},
                  {"method": "beam", "alpha": f"{i / 1000:.3f}"}][i % 3]
        await post(http, fields, churn)

  await asyncio.gather(churn_client(), *(greedy_client() for _ in range(clients)))
  return greedy, churn


def option_churn(args, images: list[bytes], folder: str) -> int:
  """Greedy p50/p99 while new option values arrive, this serve.py vs `--before`'s."""
  import itertools  # pylint: disable=g-import-not-at-top
  roots = {"after (options as data)": common.ROOT}
  if args.before:
    roots = {"before (options static)": os.path.abspath(args.before), **roots}
  seconds, rounds = (10, 2) if args.quick else (20, 3)
  counter = itertools.count(1)
  load = common.CpuLoad()
  procs, urls = [], {}
  out = {name: {"greedy": [], "churn": []} for name in roots}
  with open(os.path.join(folder, "servers.log"), "w") as log:
    try:
      for name, root in roots.items():
        port = _free_port()
        procs.append(subprocess.Popen(  # a fresh compile cache: no value compiled before
            [sys.executable, os.path.join(root, "serve.py"), "--workdir", args.workdir,
             "--port", str(port), "--batch_sizes", "1,4,8", "--cache_dir",
             tempfile.mkdtemp(prefix="cache_", dir=folder)], cwd=root,
            env={**os.environ, "PYTHONPATH": root}, stdout=log, stderr=subprocess.STDOUT))
        urls[name] = f"http://127.0.0.1:{port}"
      for proc, url in zip(procs, urls.values()):
        wait_healthy(proc, url)
      for _ in range(rounds):
        for name, url in urls.items():
          greedy, churn = asyncio.run(_churn(url, images, seconds, 2, counter))
          out[name]["greedy"] += greedy
          out[name]["churn"] += churn
    finally:
      for proc in procs:
        proc.terminate()
        proc.wait(60)
  others = load.others()
  lines = [f"Machine: {common.machine()}; other processes used "
           f"{'?' if others is None else f'{others:.0%}'} of its CPU during the run (a "
           f"loaded machine). Command: `python bench/serve.py --workdir {args.workdir} "
           f"--option_churn{' --before ' + args.before if args.before else ''}"
           f"{' --quick' if args.quick else ''}`: 2 greedy clients and 1 client sending a new "
           f"sampling temperature, top_k or beam alpha with every request, {rounds} rounds "
           f"of {seconds} s per server, alternating.", "",
           "| server | greedy p50 | greedy p99 | greedy requests | new-value requests | "
           "their p50 | their p99 |", "|---|---|---|---|---|---|---|"]
  for name, o in out.items():
    q = lambda xs, p: 1000 * statistics.quantiles(xs, n=100, method="inclusive")[p - 1]  # noqa: E731
    lines.append(f"| {name} | {q(o['greedy'], 50):.0f} ms | {q(o['greedy'], 99):.0f} ms | "
                 f"{len(o['greedy'])} | {len(o['churn'])} | {q(o['churn'], 50):.0f} ms | "
                 f"{q(o['churn'], 99):.0f} ms |")
  text = "\n".join(lines) + "\n"
  print("\n" + text)
  with open(os.path.join(args.out, "serve_options.md"), "w") as f:
    f.write(text)
  return 0


def model_costs(workdir: str, paths: list[str], quick: bool) -> dict:
  """Milliseconds per image of the model call alone, timed in alternating rounds."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  from jaxcap.captioner import Captioner  # pylint: disable=g-import-not-at-top
  captioner = Captioner.load(workdir)
  batch = np.stack([captioner.load_image(path) for path in paths[:16]])
  cases = {"batch 1": (1, 4), "batch 16, encoder on chunks of 4": (16, 4),
           "batch 16, encoder on all 16": (16, 0)}
  programs = {name: (lambda n=n, c=c: captioner.caption_batch(
      batch[:n], captioner.options, sizes=(1, 16), encode_chunk=c))
              for name, (n, c) in cases.items()}
  seconds = common.interleaved(programs, repeat=5 if quick else 20)
  return {name: 1000 * seconds[name] / cases[name][0] for name in cases}


def table(rows: list[dict]) -> str:
  lines = ["| clients | batched: captions/s | p50 | p99 | images per call | "
           "one image per call: captions/s | p50 | p99 | speed-up |",
           "|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    b, o = r["batched"], r["one image per call"]
    lines.append(
        f"| {r['clients']} | {b['captions_per_s']:.1f} | {b['p50_ms']:.0f} ms | "
        f"{b['p99_ms']:.0f} ms | {b['mean_batch']:.1f} | {o['captions_per_s']:.1f} | "
        f"{o['p50_ms']:.0f} ms | {o['p99_ms']:.0f} ms | "
        f"**{b['captions_per_s'] / o['captions_per_s']:.2f}x** |")
  return "\n".join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--workdir", default=os.path.join("workdirs", "quickstart"))
  p.add_argument("--quick", action="store_true", help="fewer requests")
  p.add_argument("--out", default=os.path.join(common.ROOT, "bench"),
                 help="folder for serve.md and serve.json")
  p.add_argument("--doc", default=common.DOC,
                 help="markdown file whose bench/serve.py section gets this run's table "
                      "('' to leave it alone)")
  p.add_argument("--option_churn", action="store_true",
                 help="greedy latency while new option values arrive (serve_options.md)")
  p.add_argument("--before", default=None,
                 help="with --option_churn: a checkout of an earlier jaxcap to compare")
  args = p.parse_args(argv)
  folder = tempfile.mkdtemp(prefix="jaxcap_bench_serve_")
  paths = [str(path) for path, _ in shapes.write_examples(folder, seed=7, start=0, count=32)]
  images = [open(path, "rb").read() for path in paths]
  if args.option_churn:
    return option_churn(args, images, folder)
  load = common.CpuLoad()
  started = time.perf_counter()
  procs, urls = [], {}
  with open(os.path.join(folder, "servers.log"), "w") as log:
    try:
      for name, extra in SERVERS.items():
        proc, urls[name] = start(args.workdir, extra, log)
        procs.append(proc)
      for proc, url in zip(procs, urls.values()):
        health = wait_healthy(proc, url)
      rows = []
      for clients in CLIENTS:
        requests = max(32, 4 * clients) if args.quick else max(64, 16 * clients)
        result = measure(urls, images, clients, requests, rounds=2 if args.quick else 3)
        rows.append({"clients": clients, **result})
        print(f"{clients} clients: " + ", ".join(
            f"{name} {r['captions_per_s']:.1f}/s" for name, r in result.items()), flush=True)
    finally:
      for proc in procs:
        proc.terminate()
        proc.wait(60)
  costs = model_costs(args.workdir, paths, args.quick)
  others = load.others()
  header = (f"Machine: {common.machine()}. Command: `python bench/serve.py --workdir "
            f"{args.workdir}{' --quick' if args.quick else ''}` "
            f"({time.perf_counter() - started:.0f} s, model step {health['step']}, "
            f"{health['image_size']} px images, greedy). Other processes used "
            f"{'?' if others is None else f'{others:.0%}'} of the machine's CPU during the run.")
  text = (header + "\n\n" + table(rows) + "\n\nThe model call alone (no HTTP), per image: " +
          "; ".join(f"{name} {ms:.1f} ms" for name, ms in costs.items()) + ".\n")
  print("\n" + text)
  with open(os.path.join(args.out, "serve.md"), "w") as f:
    f.write(text)
  if args.doc and common.write_doc_section("bench/serve.py", text, args.doc):
    print(f"[table written into {args.doc}]", file=sys.stderr)
  with open(os.path.join(args.out, "serve.json"), "w") as f:
    json.dump({"machine": common.machine(), "others_cpu": others, "quick": args.quick,
               "rows": rows, "model_ms_per_image": costs}, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
