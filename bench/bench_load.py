"""batchd under client load: 100 concurrent API clients while a 50,000-line batch runs.

    python bench/bench_load.py                    # 100 clients, 50,000 lines
    python bench/bench_load.py --clients 20 --lines 5000   # quicker
    python bench/bench_load.py --repeat 3         # three runs; the target must hold in each
    python bench/bench_load.py --serve-arg=--no-engine-process   # API and engine in one process
    python bench/bench_load.py --upstream nginx   # an upstream that takes no CPU here

The instant upstream (tests/upstream_server.py, or with ``--upstream nginx`` a
fixed answer from nginx that costs almost nothing) and batchd run in their own
processes; this process runs the clients on one asyncio loop with the official
``openai`` async SDK. Each client loops until the batch is done: it waits a
random think time (mean ``--think`` seconds, as a polling client does), then
retrieves the batch (70%), lists batches or files (20%) or uploads a small
file (10%). Prints p50/p95/p99 per operation, errors and the batch's duration,
and writes bench/out/load.json. The target: no errors, p99 of batch retrieval
under 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import openai

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_service import free_port, nginx_binary, upstream_server, wait_http, write_input

ROOT = Path(__file__).resolve().parent.parent
SMALL = b"".join(
    json.dumps(
        {
            "custom_id": f"s{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "bench-model", "messages": [{"role": "user", "content": "hi"}]},
        }
    ).encode()
    + b"\n"
    for i in range(10)
)


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def server_p99(root: str) -> dict[str, float]:
    """p99 per GET route as the server itself measured it (upper bucket bound, ms), from
    /metrics: what the API took, without this process's own waits for a core."""
    import aiohttp

    async with aiohttp.ClientSession() as s, s.get(f"{root}/metrics") as r:
        text = await r.text()
    buckets: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for line in text.splitlines():
        if not line.startswith("batchd_http_request_duration_seconds_bucket{"):
            continue
        labels, value = line.rsplit(" ", 1)
        fields = dict(part.split("=", 1) for part in labels[labels.index("{") + 1 : -1].split(","))
        if fields.get('method') != '"GET"':
            continue
        le = fields["le"].strip('"')
        route = fields["route"].strip('"')
        buckets[route].append((float("inf") if le == "+Inf" else float(le), float(value)))
    result = {}
    for route, rows in buckets.items():
        rows.sort()
        total = rows[-1][1]
        if total:
            bound = next(le for le, count in rows if count >= 0.99 * total)
            result[route] = bound * 1000
    return result


async def drive(base_url: str, path: Path, clients: int, think: float) -> dict[str, object]:
    api = openai.AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0, timeout=30)
    with path.open("rb") as fh:
        f = await api.files.create(file=fh, purpose="batch")
    t0 = time.perf_counter()
    batch = await api.batches.create(
        input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    latencies: dict[str, list[float]] = defaultdict(list)
    errors: dict[str, list[str]] = defaultdict(list)
    done = asyncio.Event()
    finished: dict[str, object] = {}
    rng = random.Random(7)

    async def timed(name: str, call: object) -> object:
        start = time.perf_counter()
        try:
            result = await call  # type: ignore[misc]
        except Exception as exc:  # counted, never fatal: the benchmark reports it
            errors[name].append(f"{type(exc).__name__}: {exc}"[:200])
            return None
        latencies[name].append((time.perf_counter() - start) * 1000)
        return result

    async def client(n: int) -> None:
        await asyncio.sleep(rng.uniform(0, think))  # spread the start
        while not done.is_set():
            roll = rng.random()
            if roll < 0.7:
                b = await timed("batches.retrieve", api.batches.retrieve(batch.id))
                if b is not None and b.status in ("completed", "failed", "expired", "cancelled"):
                    finished.setdefault("batch", b)
                    finished.setdefault("seconds", time.perf_counter() - t0)
                    done.set()
            elif roll < 0.8:
                await timed("batches.list", api.batches.list(limit=20))
            elif roll < 0.9:
                await timed("files.list", api.files.list(limit=20))
            else:
                await timed(
                    "files.create",
                    api.files.create(file=(f"c{n}.jsonl", SMALL), purpose="batch"),
                )
            await asyncio.sleep(rng.expovariate(1 / think))

    lags: list[float] = []

    async def lag_monitor() -> None:
        # This process's own loop lag: how late a 10 ms sleep wakes. A client-side
        # latency spike that the server's histogram does not show, with a lag of the
        # same size here, was spent in this process, not in batchd.
        while not done.is_set():
            start = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append((time.perf_counter() - start - 0.01) * 1000)

    monitor = asyncio.create_task(lag_monitor())
    await asyncio.gather(*(client(n) for n in range(clients)))
    await monitor
    await api.close()
    server_side = await server_p99(base_url.removesuffix("/v1"))
    b = finished["batch"]
    return {
        "batch_status": b.status,  # type: ignore[attr-defined]
        "batch_completed": b.request_counts.completed,  # type: ignore[attr-defined]
        "batch_seconds": round(float(finished["seconds"]), 2),  # type: ignore[arg-type]
        "operations": {
            name: {
                "count": len(values),
                "p50_ms": round(pct(values, 50), 1),
                "p95_ms": round(pct(values, 95), 1),
                "p99_ms": round(pct(values, 99), 1),
                "mean_ms": round(statistics.fmean(values), 1),
                "errors": len(errors[name]),
            }
            for name, values in sorted(latencies.items())
        },
        "server_p99_ms": server_side,
        "client_loop_lag_ms": {"p99": round(pct(lags, 99), 1), "max": round(max(lags), 1)},
        "errors": sum(len(v) for v in errors.values()),
        "error_samples": [e for v in errors.values() for e in v[:3]],
    }


def run_once(args: argparse.Namespace) -> dict[str, object]:
    port = free_port()
    with upstream_server(args.upstream) as up_base, tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "BATCHD_LOCAL_ENABLED": "false", "BATCHD_LOG_LEVEL": "WARNING"}
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "batchd",
                "serve",
                "--port",
                str(port),
                "--data-dir",
                str(Path(tmp) / "data"),
                "--upstream",
                up_base,
                "--upstream-concurrency",
                str(args.concurrency),
                *args.serve_arg,
            ],
            env=env,
        )
        try:
            wait_http(f"http://127.0.0.1:{port}/health")
            path = Path(tmp) / "in.jsonl"
            write_input(path, args.lines)
            result = asyncio.run(
                drive(f"http://127.0.0.1:{port}/v1", path, args.clients, args.think)
            )
        finally:
            server.terminate()
            server.wait(60)
    p99 = result["operations"]["batches.retrieve"]["p99_ms"]  # type: ignore[index]
    result["target_met"] = result["errors"] == 0 and p99 < 50
    print(
        f"\n{args.clients} clients, {args.lines:,}-line batch: "
        f"{result['batch_status']} in {result['batch_seconds']} s"
    )
    print(f"{'operation':<18}{'count':>7}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for name, row in result["operations"].items():  # type: ignore[attr-defined]
        print(
            f"{name:<18}{row['count']:>7}{row['p50_ms']:>9}{row['p95_ms']:>9}"
            f"{row['p99_ms']:>9}{row['errors']:>8}"
        )
    for route, ms in sorted(result["server_p99_ms"].items()):  # type: ignore[attr-defined]
        print(f"  server-side p99 GET {route}: <= {ms:g} ms")
    lag = result["client_loop_lag_ms"]
    print(f"  this client process's loop lag: p99 {lag['p99']} ms, max {lag['max']} ms")  # type: ignore[index]
    print(
        f"target (no errors, retrieve p99 < 50 ms): {'met' if result['target_met'] else 'MISSED'}",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=50_000)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--think", type=float, default=0.5, help="mean seconds between calls")
    parser.add_argument("--concurrency", type=int, default=64, help="upstream concurrency")
    parser.add_argument(
        "--upstream",
        choices=("python", "nginx"),
        default="python",
        help="python: tests/upstream_server.py (takes about a core here); nginx: a fixed "
        "answer that costs almost nothing, as a model server on another machine would",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs; the target must hold in each")
    parser.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        help="an extra `batchd serve` argument (repeatable), e.g. --serve-arg=--no-engine-process",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "load.json")
    args = parser.parse_args()
    if args.upstream == "nginx":
        nginx_binary()  # say so now if it is missing

    runs = [run_once(args) for _ in range(args.repeat)]
    p99s = [r["operations"]["batches.retrieve"]["p99_ms"] for r in runs]  # type: ignore[index]
    result = {
        "lines": args.lines,
        "clients": args.clients,
        "think_s": args.think,
        "cpus": os.cpu_count(),
        "serve_args": args.serve_arg,
        "upstream": args.upstream,
        "retrieve_p99_ms": p99s,
        "target_met_every_run": all(r["target_met"] for r in runs),
        "runs": runs,
    }
    if args.repeat > 1:
        print(
            f"\nretrieve p99 per run: {', '.join(f'{p:.1f}' for p in p99s)} ms; target met in "
            f"every run: {'yes' if result['target_met_every_run'] else 'NO'}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
