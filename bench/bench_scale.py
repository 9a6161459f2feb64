"""Scale-out throughput: 1, 2 and 4 worker processes on PostgreSQL versus SQLite.

    python bench/bench_scale.py                    # 20,000 lines, concurrency 64
    python bench/bench_scale.py --lines 5000       # quicker
    python bench/bench_scale.py --pg postgresql://postgres@127.0.0.1:5432/test
    python bench/bench_scale.py --compare sqlite,pg --repeat 3   # one process each

Setups (``--compare``): ``sqlite`` is one ``batchd serve`` on SQLite; ``pg`` the
same one process on PostgreSQL; ``pgN`` one ``serve --no-worker`` plus N workers.
With ``--repeat`` the setups alternate (so a noisy neighbour hits each alike) and
each figure is the median of its runs; the ratio is printed as PG/SQLite.

The upstream (tests/upstream_server.py, instant answers) runs in its own process.
Baseline: one ``batchd serve`` on SQLite (API and worker in one process). Then one
``batchd serve --no-worker`` plus N ``batchd worker`` processes sharing a fresh
PostgreSQL database (created and dropped here) and one storage directory. Each run
uploads the same file, creates the batch and times it from creation to
``completed`` (validation, every result committed, finalization). Figures are
lines per second and ratios to the SQLite run; results go to bench/out/scale.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import openai

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_service import free_port, wait_http, write_input

ROOT = Path(__file__).resolve().parent.parent


async def _admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def batchd(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "batchd", *args], env=env)


def run_once(
    *, upstream: str, path: Path, concurrency: int, workers: int, pg_admin: str | None
) -> dict[str, Any]:
    """``workers == 0``: one ``serve`` (SQLite, or PostgreSQL given ``pg_admin``);
    otherwise PostgreSQL with an API-only ``serve`` and N workers."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    env = {**os.environ, "BATCHD_LOCAL_ENABLED": "false", "BATCHD_LOG_LEVEL": "WARNING"}
    common = ["--upstream", upstream, "--upstream-concurrency", str(concurrency)]
    db_name = None
    if pg_admin is not None:
        db_name = f"batchd_bench_{secrets.token_hex(4)}"
        asyncio.run(_admin(pg_admin, f'CREATE DATABASE "{db_name}"'))
        env["BATCHD_DATABASE_URL"] = pg_admin.rsplit("/", 1)[0] + "/" + db_name
        env["BATCHD_STORAGE"] = f"file://{tmp / 'blobs'}"
    port = free_port()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        serve = ["serve", "--port", str(port), "--data-dir", str(tmp / "api"), *common]
        procs.append(batchd([*serve, *(["--no-worker"] if workers else [])], env))
        wait_http(f"http://127.0.0.1:{port}/health")
        for i in range(workers):
            procs.append(batchd(["worker", "--data-dir", str(tmp / f"w{i}"), *common], env))
        time.sleep(2.0 if workers else 0.5)  # workers up (migrations done, registered)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="bench")
        with path.open("rb") as fh:
            f = client.files.create(file=fh, purpose="batch")
        t0 = time.perf_counter()
        b = client.batches.create(
            input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        while b.status not in ("completed", "failed", "cancelled", "expired"):
            time.sleep(0.05)
            b = client.batches.retrieve(b.id)
        took = time.perf_counter() - t0
        assert b.status == "completed", b
        assert b.request_counts.completed == b.request_counts.total, b.request_counts
        n = b.request_counts.total
        return {"lines": n, "seconds": round(took, 3), "lines_per_s": round(n / took, 1)}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
        if db_name and pg_admin:
            asyncio.run(_admin(pg_admin, f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'))


SETUP_NAMES = {"sqlite": "sqlite x1 (serve)", "pg": "postgres x1 (serve)"}


def setup_name(setup: str) -> str:
    return SETUP_NAMES.get(setup) or f"postgres x{setup.removeprefix('pg')} workers"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument(
        "--compare",
        help="Setups to run instead of sqlite + --workers, e.g. 'sqlite,pg' or 'sqlite,pg1'.",
    )
    parser.add_argument("--repeat", type=int, default=1, help="Runs per setup (median).")
    parser.add_argument(
        "--pg",
        default=os.environ.get("BATCHD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test"),
        help="An existing database to connect to for CREATE/DROP DATABASE.",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "scale.json")
    args = parser.parse_args()
    setups = (
        args.compare.split(",")
        if args.compare
        else ["sqlite", *(f"pg{n}" for n in args.workers.split(","))]
    )
    if "sqlite" not in setups:
        parser.error("--compare needs 'sqlite' (the baseline)")
    for setup in setups:
        if setup not in SETUP_NAMES and not setup.removeprefix("pg").isdigit():
            parser.error(f"unknown setup {setup!r}: sqlite, pg or pgN")

    up_port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "upstream_server.py"), "--port", str(up_port)]
    )
    samples: dict[str, list[dict[str, Any]]] = {setup_name(s): [] for s in setups}
    try:
        up = f"http://127.0.0.1:{up_port}/v1"
        wait_http(f"{up}/models")
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "input.jsonl"
            write_input(path, args.lines)
            for _ in range(args.repeat):
                for setup in setups:
                    workers = int(setup.removeprefix("pg") or 0) if setup != "sqlite" else 0
                    result = run_once(
                        upstream=up, path=path, concurrency=args.concurrency, workers=workers,
                        pg_admin=None if setup == "sqlite" else args.pg,
                    )  # fmt: skip
                    samples[setup_name(setup)].append(result)
                    print(f"  {setup_name(setup):<24} {result['lines_per_s']:>10.0f} lines/s")
    finally:
        upstream.terminate()
        upstream.wait(10)
    runs = {name: _median(found) for name, found in samples.items()}
    base = runs[setup_name("sqlite")]["lines_per_s"]
    print(f"{'setup':<24} {'lines/s':>10} {'seconds':>9} {'vs sqlite':>10}")
    for name, r in runs.items():
        r["ratio_vs_sqlite"] = round(r["lines_per_s"] / base, 2)
        rate, secs, ratio = r["lines_per_s"], r["seconds"], r["ratio_vs_sqlite"]
        print(f"{name:<24} {rate:>10.0f} {secs:>9.2f} {ratio:>9.2f}x")
    report = {
        "lines": args.lines,
        "concurrency": args.concurrency,
        "repeat": args.repeat,
        "cpus": os.cpu_count(),
        "machine": platform.platform(),
        "runs": runs,
        "samples": samples,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


def _median(found: list[dict[str, Any]]) -> dict[str, Any]:
    ordered = sorted(found, key=lambda r: r["lines_per_s"])
    return dict(ordered[len(ordered) // 2])


if __name__ == "__main__":
    main()
