"""batchd end to end versus a bare asyncio HTTP loop, against the same instant upstream.

    python bench/bench_service.py                  # 50,000 lines, concurrency 64
    python bench/bench_service.py --lines 5000     # quicker
    python bench/bench_service.py --memory-mb 200  # also: peak server RSS for a 200 MB input

The upstream (tests/upstream_server.py) runs in its own process. The bare loop
sends the same requests with aiohttp at the same concurrency and keeps nothing
durable; batchd does everything (upload, validate, run with every result
committed to SQLite, finalize, download). Both are timed in the same run and
reported as a ratio; the server's peak memory is read from /proc (VmHWM).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp
import openai

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except Exception:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


def write_input(path: Path, lines: int, pad: int = 0) -> int:
    filler = ("lorem ipsum dolor sit amet " * (pad // 27 + 1))[:pad]
    with path.open("w") as fh:
        for i in range(lines):
            body = {
                "model": "bench-model",
                "messages": [
                    {"role": "system", "content": "Classify the sentiment." + filler},
                    {"role": "user", "content": f"review number {i}"},
                ],
                "max_tokens": 10,
            }
            fh.write(
                json.dumps(
                    {
                        "custom_id": f"req-{i}",
                        "method": "POST",
                        "url": "/v1/chat/completions",
                        "body": body,
                    }
                )
                + "\n"
            )
    return path.stat().st_size


async def bare_loop(base_url: str, path: Path, concurrency: int) -> float:
    bodies = [json.dumps(json.loads(line)["body"]).encode() for line in path.open()]
    sem = asyncio.Semaphore(concurrency)
    ok = 0
    t0 = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as s:

        async def one(body: bytes) -> None:
            nonlocal ok
            async with (
                sem,
                s.post(
                    f"{base_url}/chat/completions",
                    data=body,
                    headers={"Content-Type": "application/json"},
                ) as r,
            ):
                await r.read()
                ok += r.status == 200

        await asyncio.gather(*(one(b) for b in bodies))
    elapsed = time.perf_counter() - t0
    assert ok == len(bodies), (ok, len(bodies))
    return elapsed


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_batchd(upstream: str, path: Path, concurrency: int, data_dir: Path) -> dict[str, float]:
    port = free_port()
    env = {
        **os.environ,
        "BATCHD_LOCAL_ENABLED": "false",
        "BATCHD_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "batchd",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--upstream",
            upstream,
            "--upstream-concurrency",
            str(concurrency),
        ],
        env=env,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/health")
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="bench")
        t0 = time.perf_counter()
        with path.open("rb") as fh:
            f = client.files.create(file=fh, purpose="batch")
        t_upload = time.perf_counter()
        b = client.batches.create(
            input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        while b.status not in ("completed", "failed", "cancelled", "expired"):
            time.sleep(0.1)
            b = client.batches.retrieve(b.id)
        t_done = time.perf_counter()
        assert b.status == "completed", b
        assert b.output_file_id
        out = data_dir / "out.jsonl"
        client.files.content(b.output_file_id).write_to_file(out)
        t_end = time.perf_counter()
        n = sum(1 for _ in out.open("rb"))
        assert n == b.request_counts.total == b.request_counts.completed, (n, b.request_counts)
        phases = {
            "upload_s": t_upload - t0,
            "run_s": t_done - t_upload,
            "download_s": t_end - t_done,
            "total_s": t_end - t0,
            "peak_rss_mb": peak_rss_mb(proc.pid),
            "lines": float(n),
        }
        return phases
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=50_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument(
        "--repeat", type=int, default=3, help="alternate bare/batchd runs; report the median"
    )
    parser.add_argument(
        "--memory-mb",
        type=int,
        default=0,
        help="also run a batch of about this many MB and report peak RSS",
    )
    args = parser.parse_args()

    up_port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "upstream_server.py"), "--port", str(up_port)]
    )
    base = f"http://127.0.0.1:{up_port}/v1"
    results: dict[str, object] = {"lines": args.lines, "concurrency": args.concurrency}
    try:
        wait_http(f"{base}/models")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "in.jsonl"
            size = write_input(path, args.lines)
            # Alternate the two so that drifting machine load hits both alike; the
            # median of the per-pair ratios is reported.
            pairs = []
            for i in range(args.repeat):
                bare = asyncio.run(bare_loop(base, path, args.concurrency))
                svc = run_batchd(base, path, args.concurrency, Path(tmp) / f"data{i}")
                pairs.append((svc["total_s"] / bare, bare, svc))
                print(
                    f"  run {i + 1}: bare {bare:.2f} s, batchd {svc['total_s']:.2f} s, "
                    f"ratio {svc['total_s'] / bare:.2f}x"
                )
            pairs.sort(key=lambda p: p[0])
            ratio, bare, svc = pairs[len(pairs) // 2]
            results.update(
                input_mb=size / 2**20,
                bare_s=bare,
                batchd=svc,
                ratio=ratio,
                ratios=[p[0] for p in pairs],
            )
            print(
                f"{args.lines} lines, concurrency {args.concurrency}, input {size / 2**20:.1f} MB"
                f" (median of {args.repeat} alternating runs)"
            )
            print(f"  bare asyncio loop : {bare:7.2f} s  ({args.lines / bare:,.0f} req/s)")
            print(
                f"  batchd end to end : {svc['total_s']:7.2f} s  (upload {svc['upload_s']:.2f}, "
                f"validate+run+finalize {svc['run_s']:.2f}, download {svc['download_s']:.2f})"
            )
            print(f"  ratio batchd/bare : {ratio:7.2f}x   (target <= 2.0x)")
            print(f"  server peak RSS   : {svc['peak_rss_mb']:7.1f} MB")
        if args.memory_mb:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "big.jsonl"
                n = min(50_000, args.lines)
                pad = max(0, args.memory_mb * 1_000_000 // n - 260)  # decimal MB
                size = write_input(path, n, pad=pad)
                mem = run_batchd(base, path, args.concurrency, Path(tmp) / "data")
                results["memory"] = {"input_mb": size / 2**20, **mem}
                print(
                    f"{size / 2**20:.0f} MB input ({n} lines): server peak RSS "
                    f"{mem['peak_rss_mb']:.1f} MB (target < 300 MB), total {mem['total_s']:.1f} s"
                )
    finally:
        upstream.terminate()
        upstream.wait(10)
    out_dir = ROOT / "bench" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "service.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
