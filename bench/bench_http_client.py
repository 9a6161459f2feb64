"""The HTTP client on batchd's hot path: its pool (backends/pool.py) vs aiohttp.

    python bench/bench_http_client.py               # 30,000 POSTs, 64 in flight, 3 rounds
    python bench/bench_http_client.py --requests 5000 --rounds 1

Both send the same chat bodies to nginx answering one fixed completion (Debian's
``nginx-light``; bench/bench_service.py's upstream), so the upstream costs almost
nothing and the figure is the client's own cost: wall seconds and CPU microseconds
per request of this process, alternating in each round. The aiohttp side is the bare
loop of bench/bench_service.py (a ``ClientSession`` as it comes, a semaphore of 64).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "src"))

from batchd.backends.pool import ConnectionPool  # noqa: E402
from bench_service import _bare_loop, upstream_server, write_input  # noqa: E402


async def pool_loop(base_url: str, path: Path, concurrency: int) -> float:
    # The bodies are built as the aiohttp loop builds them (inside the CPU timing).
    bodies = [json.dumps(json.loads(line)["body"]).encode() for line in path.open()]
    pool = ConnectionPool(base_url, headers={"Content-Type": "application/json"}, timeout=30)
    sem = asyncio.Semaphore(concurrency)
    ok = 0

    async def one(body: bytes) -> None:
        nonlocal ok
        async with sem:
            answer = await pool.post("/v1/chat/completions", body)
            ok += answer.status == 200

    t0 = time.perf_counter()
    await asyncio.gather(*(one(b) for b in bodies))
    elapsed = time.perf_counter() - t0
    pool.close()
    assert ok == len(bodies), (ok, len(bodies))
    return elapsed


def timed(run: object) -> tuple[float, float]:
    cpu = time.process_time()
    elapsed = asyncio.run(run)  # type: ignore[arg-type]
    return elapsed, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=30_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, upstream_server("nginx") as base:
        path = Path(tmp) / "in.jsonl"
        write_input(path, args.requests)
        per = 1e6 / args.requests
        ratios = []
        for i in range(args.rounds):
            a_wall, a_cpu = timed(_bare_loop(base, path, args.concurrency))
            p_wall, p_cpu = timed(pool_loop(base, path, args.concurrency))
            ratios.append(a_cpu / p_cpu)
            print(
                f"round {i + 1}: aiohttp {a_wall:.2f} s, {a_cpu * per:.0f} us/request; "
                f"pool {p_wall:.2f} s, {p_cpu * per:.0f} us/request; "
                f"pool costs {p_cpu / a_cpu:.2f} of aiohttp's CPU",
                flush=True,
            )
        ratios.sort()
        median = ratios[len(ratios) // 2]
        print(f"median: the pool takes 1/{median:.1f} of aiohttp's CPU per request")


if __name__ == "__main__":
    main()
