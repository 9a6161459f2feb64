"""The capacity-seeking controller (engine/capacity.py) against a continuous-batching
server in simulated time (tests/dispatch/virtual.py): fast and deterministic.

Each profile compares with the best fixed concurrency found by a sweep of the same
simulated server, so the bounds say what the controller gets of what is possible.
"""

from __future__ import annotations

import statistics

import pytest

from batchd.engine.capacity import Controller
from batchd.engine.limits import Limits
from batchd.store.records import BackendUse

from .virtual import VirtualServer

SWEEP = [1, 2, 4, 8, 16, 32, 64, 128, 256, 384, 512, 1024]


def run(server: VirtualServer, total: int, **kw: object) -> tuple[Controller, float]:
    ctl = Controller(kw.pop("ceiling", 1024), clock=server.clock, **kw)  # type: ignore[arg-type]
    return ctl, server.run(ctl, total)


@pytest.mark.parametrize(
    ("cap", "a", "b", "tokens", "total"),
    [
        (256, 0.010, 0.00005, 50, 4000),  # big GPU server
        (4, 0.030, 0.020, 20, 120),  # small server: few slots, steep step cost
        (1, 0.020, 0.001, 20, 60),  # one slot
        (32, 0.010, 0.0003, 20, 2000),
        (1024, 0.010, 0.00005, 50, 12000),
    ],
)
def test_converges_to_the_knee_without_a_standing_queue(
    cap: int, a: float, b: float, tokens: int, total: int
) -> None:
    server = VirtualServer(cap, a, b, tokens)
    _ctl, took = run(server, total)
    best = server.best_fixed(total, SWEEP)
    assert best / took >= 0.85, f"{best / took:.2f} of the best fixed concurrency"
    # Held at the knee: at least ~90% of the slots busy, the queue a small lead.
    late = [lim for t, lim in server.limits if t > took * 0.6]
    assert 0.85 * cap <= statistics.median(late) <= max(cap + 2, 1.5 * cap), late[-5:]
    # Requests do not sit in the server's queue for long (a + b*cap per step); with
    # one slot, a lead of one is a whole turnover.
    turnover = tokens * (a + b * cap)
    assert statistics.mean(server.queue_waits) <= (0.6 if cap > 1 else 2.0) * turnover


def test_ramps_to_a_big_server_within_a_few_round_trips() -> None:
    server = VirtualServer(256, 0.010, 0.00005, 50)
    _ctl, _ = run(server, 4000)
    turnover = 50 * (0.010 + 0.00005 * 256)  # one answer's latency at the knee
    reached = next(t for t, lim in server.limits if lim >= 200)
    assert reached <= 4 * turnover, f"took {reached:.1f}s to reach 200 in flight"


def test_stays_under_the_ceiling() -> None:
    server = VirtualServer(256, 0.010, 0.00005, 50)
    _ctl, _ = run(server, 1000, ceiling=40)
    assert max(lim for _, lim in server.limits) <= 40
    assert server.limits[-1][1] == 40  # the knee is above the ceiling: hold at it


def test_shared_ceiling_across_workers_bounds_the_controller() -> None:
    limits = Limits()
    mine = limits.get("up", 10)
    mine.control.limit = 10.0
    limits.apply("w1", {"w2": {"up": BackendUse(keys=[], holds=0)}})
    assert mine.ceiling == 5 and mine.window <= 5
    # Growing afterwards never passes the share.
    server = VirtualServer(256, 0.010, 0.00005, 10)
    mine.control.clock = server.clock
    server.run(mine.control, 300)
    assert max(lim for _, lim in server.limits) <= 5


def test_429_cuts_and_the_rate_limit_is_driven_near_its_limit() -> None:
    allowed = 16
    server = VirtualServer(1000, 0.010, 0.0, 10, reject_above=allowed)
    ctl, took = run(server, 4000)
    best = VirtualServer(1000, 0.010, 0.0, 10).best_fixed(4000, [allowed])
    assert ctl.cuts >= 1
    assert best / took >= 0.85
    assert server.refused / server.tries <= 0.03


def test_a_fast_upstream_with_millisecond_hiccups_is_held_at_the_ceiling() -> None:
    # Answers within a millisecond or two (a cache, a proxy, a tiny model): the latency
    # that grows with our tries in flight is mostly our own, and a hiccup of a few ms
    # (a GC pause, a commit) is no queue at the server. Cutting on them sank the limit
    # towards 1, where each try costs the most CPU; the limit holds at the ceiling.
    def hiccups(t: float) -> int:
        return 30 if t % 0.02 < 0.001 else 0  # others' work stalls a step now and then

    server = VirtualServer(100_000, 0.0001, 0.00014, tokens=1, others=hiccups)
    _ctl, took = run(server, 30_000, ceiling=64)
    late = [lim for t, lim in server.limits if t > took / 2]
    assert statistics.mean(late) >= 0.95 * 64, statistics.mean(late)


def test_cuts_when_latency_rises_from_someone_elses_load() -> None:
    # Someone else starts 200 sequences at t=30 on a 256-slot server.
    server = VirtualServer(256, 0.010, 0.00005, 50, others=lambda t: 0 if t < 30 else 200)
    ctl = Controller(1024, clock=server.clock)
    server.run(ctl, 100_000, until=80)
    before = [lim for t, lim in server.limits if 20 < t < 30]
    after = [lim for t, lim in server.limits if t > 70]
    assert min(before) >= 200
    assert max(after) <= 120, f"still {max(after):.0f} in flight with 200 slots taken"


def test_server_gauges_keep_the_queue_near_zero_and_running_at_cap() -> None:
    server = VirtualServer(256, 0.010, 0.00005, 50, load_every=0.25)
    ctl, _took = run(server, 4000)
    late = [g for g in server.gauges[len(server.gauges) // 3 :]]
    assert statistics.mean(r for r, _ in late) >= 0.9 * 256
    assert statistics.mean(w for _, w in late) <= 0.1 * 256
    assert ctl.phase == "hold"


def test_background_keeps_step_latency_within_the_slowdown_and_gives_way() -> None:
    idle = {True: 0.010 + 0.0003 * 2, False: 0.010 + 0.0003 * 16}
    server = VirtualServer(32, 0.010, 0.0003, 20, others=lambda t: 2 if t < 40 else 16)
    ctl = Controller(1024, background=True, slowdown=1.5, clock=server.clock)
    server.run(ctl, 1_000_000, until=90)
    early = [step for t, step, _ in server.steps if 15 < t < 40]
    late = [step for t, step, _ in server.steps if 60 < t < 90]
    assert statistics.mean(early) <= 1.5 * idle[True]
    assert statistics.mean(late) <= 1.5 * idle[False]
    lim_early = statistics.median(lim for t, lim in server.limits if 15 < t < 40)
    lim_after = statistics.median(lim for t, lim in server.limits if 42 < t < 60)
    assert lim_after < 0.7 * lim_early  # gave way at once when the others' load rose
    assert lim_after >= 2  # and still makes progress
    # Never more in flight than the slots others leave (no queue in front of them).
    assert max(lim for t, lim in server.limits if t > 42) <= 32 - 16 + 1


def test_not_adaptive_is_the_ceiling() -> None:
    ctl = Controller(64, adaptive=False)
    assert ctl.limit == 64 and ctl.phase == "fixed"


def test_a_limit_held_at_the_ceiling_follows_the_ceiling_up() -> None:
    # Held at its share of a shared ceiling (not at the server's knee): when the share
    # grows (another worker's work moved away), the limit goes with it at once, not by
    # a probe of 5% every few rounds.
    server = VirtualServer(256, 0.010, 0.00005, 50)
    ctl, _ = run(server, 400, ceiling=20)
    assert ctl.phase == "hold" and ctl.limit == 20
    ctl.set_ceiling(60)
    assert ctl.limit == 60
    # A limit held at a knee below the ceiling stays at the knee.
    small = VirtualServer(4, 0.030, 0.020, 20)
    knee, _ = run(small, 120, ceiling=64)
    held = knee.limit
    assert knee.phase == "hold" and held < 64
    knee.set_ceiling(128)
    assert knee.limit == held


def test_a_limit_on_requests_in_flight_is_held_just_below_once_confirmed() -> None:
    # Refused at 17 in startup (a cut, as for any 429), then again at 17 when a probe goes
    # back there: that is a limit on requests in flight and 16 is fine, so the limit stays
    # at 16 rather than falling to 85% and climbing back every few seconds.
    server = VirtualServer(1000, 0.010, 0.0, 10, reject_above=16)
    _ctl, took = run(server, 8000)
    late = [lim for t, lim in server.limits if t > took * 0.3]
    assert min(late) >= 15, sorted(set(late))
    best = VirtualServer(1000, 0.010, 0.0, 10).best_fixed(8000, [16])
    assert best / took >= 0.93
