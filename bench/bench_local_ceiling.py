"""What the embedded chat model can do on this machine at best: the ceiling for
bench/bench_local_chat.py.

Measures llama.cpp itself through batchd's runtime (backends/local/llamacpp.py, the
default model and context settings): prompt tokens per second when a prompt is
prefilled in one ``llama_decode`` call, and the time of one decode step that carries one
new token for each of ``w`` sequences, for several widths. From those, for a job of
``P`` prompt tokens (not shared) and ``G`` generated tokens, the best any scheduler can
do is about ``P / prefill_rate + steps(G, w) * step(w)``, against one-by-one decoding at
``step(1)`` per token. Example::

    .venv/bin/python bench/bench_local_ceiling.py
"""

from __future__ import annotations

import argparse
import time

from batchd.backends.local.config import DEFAULT_CHAT_MODEL, LocalModelsConfig, resolve_model_path
from batchd.backends.local.llamacpp import LlamaRuntime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="1,4,8,16,32,64")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--prompt", type=int, default=64, help="prompt tokens per sequence")
    parser.add_argument("--threads", type=int, default=0, help="n_threads (0: batchd's default)")
    args = parser.parse_args()
    widths = [int(w) for w in args.widths.split(",")]
    config = (
        LocalModelsConfig()
        .chat[DEFAULT_CHAT_MODEL]
        .model_copy(
            update={
                "max_batch": max(widths),
                **({"n_threads": args.threads} if args.threads else {}),
            }
        )
    )
    rt = LlamaRuntime(resolve_model_path(config.path), config)
    print(f"model {config.path}, n_threads {config.n_threads}, n_batch {config.n_batch}")
    tok = 1000  # any ordinary token id

    # Prefill: n_batch prompt tokens of one sequence per call.
    n = min(rt.n_batch, 512)
    rates = []
    for _ in range(5):
        rt.clear()
        t0 = time.perf_counter()
        assert rt.decode([(tok, p, 0, p == n - 1) for p in range(n)]) == 0
        rates.append(n / (time.perf_counter() - t0))
    prefill = sorted(rates)[len(rates) // 2]
    print(f"prefill: {prefill:,.0f} prompt tokens/s ({n} per call)")

    step1 = None
    for w in widths:
        rt.clear()
        for s in range(w):  # each sequence has a prompt of its own
            assert rt.decode([(tok, p, s, p == args.prompt - 1) for p in range(args.prompt)]) == 0
        times = []
        for k in range(args.steps):
            pos = args.prompt + k
            t0 = time.perf_counter()
            assert rt.decode([(tok, pos, s, True) for s in range(w)]) == 0
            times.append(time.perf_counter() - t0)
        step = sorted(times)[len(times) // 2]
        step1 = step1 or step
        print(
            f"width {w:3d}: step {step * 1000:6.1f} ms, {w / step:7.1f} generated tok/s, "
            f"{w * step1 / step:5.2f}x one sequence"
        )
    rt.close()


if __name__ == "__main__":
    main()
