"""Throughput and latency of ``vitune serve``'s ``POST /v1/predict``, one image a request.

Writes a tiny RUN_DIR (a 2-layer ViT at 32 px, 14 labels, as ``bench/predict_memory.py``), starts
``vitune serve RUN_DIR --port 0`` as its own process on 127.0.0.1 only, and sends ``--requests``
single-image requests at each concurrency (after a few warm-up ones), each level bounded by
``--max-seconds``. Prints requests/s, p50/p95 latency and the mean micro-batch size the server
reports in ``/healthz``.

    .venv/bin/python bench/serve.py --requests 200 --concurrency 1 8
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from predict_memory import SIDE, write_run

WARM_UP = 10
STARTUP_LINES = 20  # lines of output vitune serve may print before its URL


def png_bytes(side: int = 64) -> bytes:
    """One random RGB PNG, larger than the model's input so each request also decodes and resizes."""
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def start_server(run: Path, max_batch: int, flags: list[str] = ()) -> tuple[subprocess.Popen, str]:
    """``vitune serve`` on a free 127.0.0.1 port (with more ``flags``): the process and its base URL."""
    command = [sys.executable, "-m", "vitune", "serve", str(run), "--port", "0", "--host", "127.0.0.1",
               "--device", "cpu", "--max-batch", str(max_batch), *flags]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"})
    said = []
    for line in process.stdout:  # log lines (a page without examples, say) may come before the URL
        said.append(line.strip())
        found = re.search(r"http://127\.0\.0\.1:\d+/", line)
        if found:
            return process, found.group(0)
        if len(said) >= STARTUP_LINES:
            break
    process.kill()
    raise SystemExit(f"vitune serve did not start: {' | '.join(said[-3:])}")


async def measure(url: str, image: bytes, requests: int, concurrency: int, max_seconds: float) -> dict:
    """Send ``requests`` predictions with ``concurrency`` in flight; latencies and the batches the server ran."""
    latencies: list[float] = []
    pending = iter(range(requests))
    deadline = time.perf_counter() + max_seconds

    async def worker(client: httpx.AsyncClient) -> None:
        for _ in pending:
            if time.perf_counter() > deadline:
                return
            start = time.perf_counter()
            response = await client.post(url + "v1/predict", files={"image": ("bench.png", image, "image/png")})
            response.raise_for_status()
            latencies.append(time.perf_counter() - start)

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        for _ in range(WARM_UP):
            warm = await client.post(url + "v1/predict", files={"image": ("bench.png", image, "image/png")})
            warm.raise_for_status()
        before = (await client.get(url + "healthz")).json()["batch_sizes"]
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        seconds = time.perf_counter() - start
        after = (await client.get(url + "healthz")).json()["batch_sizes"]
    batches = sum(after.values()) - sum(before.values())
    return {"done": len(latencies), "seconds": seconds, "latencies": np.array(latencies), "batches": batches}


def main() -> None:
    """Start the server, measure each concurrency and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--max-seconds", type=float, default=120.0, help="cap on each concurrency level")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vitune-bench-serve-"))
    process = None
    try:
        write_run(work / "run")
        process, url = start_server(work / "run", args.max_batch)
        image = png_bytes()
        print(f"{SIDE} px tiny ViT, 14 labels, --max-batch {args.max_batch}, {url}")
        print("| concurrency | requests | requests/s | p50 ms | p95 ms | mean batch |\n|---:|---:|---:|---:|---:|---:|")
        for concurrency in args.concurrency:
            result = asyncio.run(measure(url, image, args.requests, concurrency, args.max_seconds))
            ms = result["latencies"] * 1000
            print(f"| {concurrency} | {result['done']} | {result['done'] / result['seconds']:.1f} | "
                  f"{np.percentile(ms, 50):.1f} | {np.percentile(ms, 95):.1f} | "
                  f"{result['done'] / max(result['batches'], 1):.2f} |", flush=True)
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
