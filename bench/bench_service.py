"""batchd end to end versus a bare asyncio HTTP loop, against the same instant upstream.

    python bench/bench_service.py                  # 50,000 lines, concurrency 64, both upstreams
    python bench/bench_service.py --lines 5000     # quicker
    python bench/bench_service.py --upstream nginx # one upstream only
    python bench/bench_service.py --serve-arg=--no-engine-process   # one-process batchd
    python bench/bench_service.py --memory-mb 200  # also: peak server RSS for a 200 MB input

Two upstreams, each in its own process: ``python`` is tests/upstream_server.py
(aiohttp; it answers by echoing the request and costs about as much CPU as the
client), ``nginx`` is nginx (Debian's ``nginx-light``) answering one fixed chat
completion, so the upstream costs almost nothing and the figure is batchd's own
cost per request. The bare loop sends the same requests with aiohttp at the same
concurrency and keeps nothing durable; batchd does everything (upload, validate,
run with every result committed to SQLite, finalize, download). Both are timed in
the same run, alternating, and reported as a ratio bare/batchd (speed: >= 1.0 means
batchd is as fast as the bare loop); the server's peak memory is read from /proc
(VmHWM; with the engine in a child process, the larger of the two).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
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


def bare_loop(base_url: str, path: Path, concurrency: int) -> tuple[float, float]:
    """Seconds and CPU seconds of the bare loop."""
    cpu = time.process_time()
    elapsed = asyncio.run(_bare_loop(base_url, path, concurrency))
    return elapsed, time.process_time() - cpu


async def _bare_loop(base_url: str, path: Path, concurrency: int) -> float:
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


FIXED_COMPLETION = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "bench-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "positive"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 21, "completion_tokens": 1, "total_tokens": 22},
    },
    separators=(",", ":"),
)

NGINX_CONF = """daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 10000000;
    client_body_buffer_size 64k;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            default_type application/json;
            return 200 '{body}';
        }}
    }}
}}
"""


def nginx_binary() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if found is None:
        sys.exit(
            "nginx is not installed, and the nginx upstream needs it: install it with\n"
            "    apt-get update && apt-get install -y nginx-light\n"
            "or run only the Python upstream: --upstream python"
        )
    return found


@contextmanager
def upstream_server(kind: str) -> Iterator[str]:
    """An instant upstream in a process of its own; yields its base URL (…/v1)."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        if kind == "nginx":
            conf = Path(tmp) / "nginx.conf"
            conf.write_text(NGINX_CONF.format(dir=tmp, port=port, body=FIXED_COMPLETION))
            argv = [nginx_binary(), "-c", str(conf), "-p", tmp, "-e", f"{tmp}/error.log"]
        else:
            argv = [sys.executable, str(ROOT / "tests" / "upstream_server.py"), "--port", str(port)]
        proc = subprocess.Popen(argv)
        base = f"http://127.0.0.1:{port}/v1"
        try:
            wait_http(f"{base}/models")
            yield base
        finally:
            proc.terminate()
            proc.wait(10)


def with_children(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [pid, *(int(c) for c in children.read_text().split())] if children.exists() else [pid]


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds the processes ``pids`` have used so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rpartition(")")[2].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def peak_rss_mb(pid: int) -> float:
    """VmHWM of ``pid`` and of its children (the engine process), the largest."""
    peak = float("nan")
    for p in with_children(pid):
        try:
            text = Path(f"/proc/{p}/status").read_text()
        except FileNotFoundError:
            continue
        for line in text.splitlines():
            if line.startswith("VmHWM:"):
                mb = int(line.split()[1]) / 1024
                peak = mb if peak != peak else max(peak, mb)
    return peak


def run_batchd(
    upstream: str, path: Path, concurrency: int, data_dir: Path, serve_args: Sequence[str] = ()
) -> dict[str, float]:
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
            *serve_args,
        ],
        env=env,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/health")
        cpu_at_start = cpu_seconds(with_children(proc.pid))
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
        cpu = cpu_seconds(with_children(proc.pid)) - cpu_at_start
        n = sum(1 for _ in out.open("rb"))
        assert n == b.request_counts.total == b.request_counts.completed, (n, b.request_counts)
        phases = {
            "upload_s": t_upload - t0,
            "run_s": t_done - t_upload,
            "download_s": t_end - t_done,
            "total_s": t_end - t0,
            "peak_rss_mb": peak_rss_mb(proc.pid),
            "cpu_s": cpu,
            "lines": float(n),
        }
        return phases
    finally:
        proc.terminate()
        proc.wait(30)


def compare(
    base: str, path: Path, args: argparse.Namespace, tmp: Path, label: str
) -> dict[str, object]:
    """Alternate bare and batchd runs so drifting machine load hits both alike; the
    median of the per-pair speed ratios (bare time / batchd time) is reported."""
    pairs = []
    for i in range(args.repeat):
        bare, bare_cpu = bare_loop(base, path, args.concurrency)
        svc = run_batchd(base, path, args.concurrency, tmp / f"{label}{i}", args.serve_arg)
        svc["bare_cpu_s"] = bare_cpu
        pairs.append((bare / svc["total_s"], bare, svc))
        print(
            f"  {label} run {i + 1}: bare {bare:.2f} s ({bare_cpu:.1f} CPU s), "
            f"batchd {svc['total_s']:.2f} s ({svc['cpu_s']:.1f} CPU s), "
            f"speed {bare / svc['total_s']:.2f}x",
            flush=True,
        )
    pairs.sort(key=lambda p: p[0])
    speed, bare, svc = pairs[len(pairs) // 2]
    lines = args.lines
    per_req = 1e6 / lines
    print(f"{label} upstream (median of {args.repeat} alternating runs):")
    print(f"  bare asyncio loop : {bare:7.2f} s  ({lines / bare:,.0f} req/s)")
    print(
        f"  batchd end to end : {svc['total_s']:7.2f} s  ({lines / svc['total_s']:,.0f} req/s; "
        f"upload {svc['upload_s']:.2f}, validate+run+finalize {svc['run_s']:.2f}, "
        f"download {svc['download_s']:.2f})"
    )
    print(
        f"  CPU per request   : bare {svc['bare_cpu_s'] * per_req:.0f} us, "
        f"batchd {svc['cpu_s'] * per_req:.0f} us (all its processes)"
    )
    print(f"  speed bare/batchd : {speed:7.2f}x   (target >= 1.0x)")
    print(f"  server peak RSS   : {svc['peak_rss_mb']:7.1f} MB")
    return {
        "bare_s": bare,
        "batchd": svc,
        "speed": speed,
        "speeds": [p[0] for p in pairs],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=50_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument(
        "--repeat", type=int, default=3, help="alternate bare/batchd runs; report the median"
    )
    parser.add_argument(
        "--upstream",
        choices=("both", "nginx", "python"),
        default="both",
        help="which instant upstream(s) to measure against (default: both)",
    )
    parser.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        help="an extra `batchd serve` argument (repeatable), e.g. --serve-arg=--no-engine-process",
    )
    parser.add_argument(
        "--memory-mb",
        type=int,
        default=0,
        help="also run a batch of about this many MB and report peak RSS",
    )
    args = parser.parse_args()
    kinds = ["nginx", "python"] if args.upstream == "both" else [args.upstream]
    if "nginx" in kinds:
        nginx_binary()  # say so now, not after the first upstream's runs

    results: dict[str, object] = {
        "lines": args.lines,
        "concurrency": args.concurrency,
        "serve_args": args.serve_arg,
        "cpus": os.cpu_count(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.jsonl"
        size = write_input(path, args.lines)
        results["input_mb"] = size / 2**20
        print(
            f"{args.lines} lines, concurrency {args.concurrency}, input {size / 2**20:.1f} MB",
            flush=True,
        )
        for kind in kinds:
            with upstream_server(kind) as base:
                results[kind] = compare(base, path, args, Path(tmp), kind)
    if args.memory_mb:
        with tempfile.TemporaryDirectory() as tmp, upstream_server(kinds[0]) as base:
            path = Path(tmp) / "big.jsonl"
            n = min(50_000, args.lines)
            pad = max(0, args.memory_mb * 1_000_000 // n - 260)  # decimal MB
            size = write_input(path, n, pad=pad)
            mem = run_batchd(base, path, args.concurrency, Path(tmp) / "data", args.serve_arg)
            results["memory"] = {"input_mb": size / 2**20, **mem}
            print(
                f"{size / 2**20:.0f} MB input ({n} lines): server peak RSS "
                f"{mem['peak_rss_mb']:.1f} MB (target < 300 MB), total {mem['total_s']:.1f} s"
            )
    out_dir = ROOT / "bench" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "service.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
