"""Load test of `imgclf serve` on 127.0.0.1: bounded, stops by itself.

    python benchmarks/serve_load.py RUN_OR_MODEL [--requests 2000] [--concurrency 32] [--views all]

Starts the server as its own process on a free local port, waits for /health, then sends
`--requests` POST /predict requests (one real test image each, cycling through the run's test
files) from `--concurrency` concurrent clients, and prints throughput, latency percentiles,
errors and the batch sizes the server formed. For scale it first measures the in-process
batched rate: the same images through the same classifier (decode included) at batch 32.
The client shares the machine's cores with the server, as a co-located proxy would; it writes
prebuilt requests on raw keep-alive connections so that it takes as little of them as it can.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from common import machine, table


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_files(model: Path) -> list[str]:
    from imgclf.files import read_csv

    run = model if (model / "predictions.csv").is_file() else Path(
        __import__("json").loads((model.parent / "model.json").read_text())["source"]["run"])
    return [r["path"] for r in read_csv(run / "predictions.csv")]


def in_process_rate(model: Path, files: list[str], views: str, n: int = 512) -> float:
    from imgclf.serve import load_backend

    b = load_backend(model, views)
    data = [Path(f).read_bytes() for f in files[:n]]
    b.predict_views([np.zeros((1, s, s, 3), np.uint8) for s in b.sizes])
    t = time.perf_counter()
    for i in range(0, len(data), 32):
        views_ = [b.decode(d) for d in data[i : i + 32]]
        b.predict_views([np.stack(v) for v in zip(*views_)])
    return len(data) / (time.perf_counter() - t)


def multipart_request(port: int, name: str, data: bytes) -> bytes:
    """One whole POST /predict, built once: the load generator then only writes bytes."""
    boundary = "imgclfloadtest"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    head = (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: multipart/form-data; "
            f"boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    return head + body


async def load(port: int, requests_: list[bytes], n: int, concurrency: int, timeout: float):
    """`concurrency` keep-alive connections on raw asyncio streams. An HTTP library client (httpx)
    spent ~3 ms of CPU per request here, a core's worth at these rates, on the server's 2 cores."""
    lat, errors, next_i = [], {}, iter(range(n))

    async def worker():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i in next_i:
                t = time.perf_counter()
                try:
                    writer.write(requests_[i % len(requests_)])
                    status, length = await asyncio.wait_for(_response(reader), timeout)
                except (asyncio.TimeoutError, ConnectionError, asyncio.IncompleteReadError) as e:
                    status = type(e).__name__
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                lat.append(time.perf_counter() - t)
                if status != 200:
                    errors[status] = errors.get(status, 0) + 1
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return np.array(lat), errors, time.perf_counter() - t0


async def _response(reader) -> tuple[int, int]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = next(int(v) for k, _, v in (line.partition(":") for line in lines[1:]) if k.lower() == "content-length")
    await reader.readexactly(length)
    return status, length


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", type=Path)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--views", default="all")
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--timeout", type=float, default=60.0, help="per request, seconds")
    args = ap.parse_args()
    files = test_files(args.model)
    rate = in_process_rate(args.model, files, args.views)
    port = free_port()
    env = {**os.environ, "IMGCLF_QUIET": "1"}
    server = subprocess.Popen([sys.executable, "-m", "imgclf", "serve", str(args.model), "--port", str(port),
                               "--views", args.views, "--max-batch", str(args.max_batch),
                               "--max-wait-ms", str(args.max_wait_ms)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        for _ in range(1200):  # up to 60 s for the model to load and warm up
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        else:
            sys.exit("the server did not become healthy within 60 s")
        payloads = [multipart_request(port, Path(f).name, Path(f).read_bytes()) for f in files[:500]]
        lat, errors, wall = asyncio.run(load(port, payloads, args.requests, args.concurrency, args.timeout))
        meta = httpx.get(url + "/metadata").json()
    finally:
        server.terminate()
        server.wait(10)
    ms = lat * 1e3
    batches = meta.get("recent_batch_sizes", [])
    print(f"{machine()}\n{args.model} ({meta['model']}, views {args.views}, backend {meta['backend']}), "
          f"{args.requests} requests at {args.concurrency} concurrent, max batch {args.max_batch}, "
          f"max wait {args.max_wait_ms:g} ms\n")
    print(table(["figure", "value"], [
        ["server throughput", f"{args.requests / wall:,.1f} img/s ({wall:.1f} s)"],
        ["in-process batched rate (decode + model, batch 32)", f"{rate:,.1f} img/s"],
        ["server / in-process", f"{args.requests / wall / rate:.0%}"],
        ["latency p50 / p90 / p99", " / ".join(f"{np.percentile(ms, q):.0f}" for q in (50, 90, 99)) + " ms"],
        ["errors", sum(errors.values()) if not errors else f"{sum(errors.values())} {errors}"],
        ["batch size in the last 20 passes (mean)", f"{np.mean(batches):.1f}" if batches else "-"],
    ]))


if __name__ == "__main__":
    main()
