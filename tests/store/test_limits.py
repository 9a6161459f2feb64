"""Shared and adaptive concurrency (engine/limits.py), without a network."""

from __future__ import annotations

import asyncio

import pytest

from batchd.engine.fair import Claimant
from batchd.engine.limits import BackendLimit, Limits, demands, share_of, weighted_share_of
from batchd.store.records import BackendUse

pytestmark = pytest.mark.anyio


def sends(*backends: str, keys: tuple[str, ...] = ()) -> dict[str, BackendUse]:
    """A worker's registry entry: these backends, for ``keys``, holding no slot."""
    return {name: BackendUse(keys=list(keys), holds=0) for name in backends}


def test_share_of_divides_the_limit_among_workers() -> None:
    parts = [share_of(10, me, ["a", "b", "c"]) for me in ("a", "b", "c")]
    assert sorted(parts) == [3, 3, 4] and sum(parts) == 10
    assert share_of(10, "a", []) == 10
    assert share_of(2, "z", ["a", "b", "c"]) == 1  # more workers than slots: never starve


async def test_limits_follow_the_registry() -> None:
    limits = Limits()
    lim = limits.get("up", 12)
    assert lim.ceiling == 0  # nothing granted before the registry is read
    limits.apply("me", {})
    assert lim.ceiling == 12
    limits.apply("me", {"me": sends("up"), "w2": sends("up"), "w3": sends("other")})
    assert lim.ceiling == 6  # w3 does not send to "up"
    limits.apply("me", {"me": sends("up")})
    assert lim.ceiling == 12


async def test_429_cuts_once_per_round_trip_and_retry_after_pauses() -> None:
    lim = BackendLimit("up", 64)
    lim.control.limit = 20.0  # as if startup had got there
    lim._resize()
    tokens = [await lim.acquire_send() for _ in range(20)]
    lim.release_send(tokens[-1], status=429, retry_after=0.2)
    # 85% of what was in flight below the refused try (20 sent, the 20th refused).
    assert lim.window == 16 and lim.cuts == 1
    for t in tokens[-3:-1]:
        lim.release_send(t, status=429)  # same congestion event: no further cuts ...
    assert lim.cuts == 1
    assert lim.window == 14  # ... but the burst was refused from its 18th try on
    for t in tokens[:-3]:
        lim.release_send(t, status=None)  # the rest fail without an answer
    assert lim.window == 14
    # Retry-After pauses new tries.
    t0 = asyncio.get_running_loop().time()
    lim.release_send(await lim.acquire_send(), status=200)
    assert asyncio.get_running_loop().time() - t0 >= 0.15
    # A 429 to a try sent after the cut is a new congestion event.
    lim.release_send(await lim.acquire_send(), status=429)
    assert lim.cuts == 2 and lim.window < 17


async def test_limit_bounds_tries_in_flight() -> None:
    lim = BackendLimit("up", 8)
    lim.control.limit = 4.0
    lim._resize()
    held = [await lim.acquire_send() for _ in range(4)]
    waiter = asyncio.create_task(lim.acquire_send())
    await asyncio.sleep(0.01)
    assert not waiter.done()  # a limit of 4 is full
    lim.release_send(held.pop(), status=200)
    await asyncio.wait_for(waiter, 1)


async def test_not_adaptive_sends_at_the_ceiling() -> None:
    lim = BackendLimit("up", 8, adaptive=False)
    held = [await lim.acquire_send() for _ in range(8)]
    assert lim.window == 8 and len(held) == 8


async def test_slots_and_sends_are_shared_between_tenants_by_weight() -> None:
    # What the worker hands Limits (weight_of) reaches both gates of every backend.
    # B's waiters come first: a FIFO gate would give B three of the four that free.
    weights = {"A": 3.0, "B": 1.0}
    limits = Limits(adaptive=False, weight_of=weights.__getitem__)
    lim = limits.get("up", 4)
    limits.apply("me", {})
    a, b = Claimant("A", "a1"), Claimant("B", "b1")
    for _ in range(4):
        await lim.acquire_slot(a)
    slot_waiters = [asyncio.create_task(lim.acquire_slot(who)) for who in (b, b, b, a, a, a)]
    await asyncio.sleep(0)
    for _ in range(4):
        lim.release_slot(a)  # four of A's answers are durable: the four slots are re-divided
    await asyncio.sleep(0)
    got = [w.tenant for w, t in zip((b, b, b, a, a, a), slot_waiters, strict=True) if t.done()]
    assert sorted(got) == ["A", "A", "A", "B"]  # 3:1 of 4 slots
    for t in slot_waiters:
        t.cancel()
    tickets = [(await lim.acquire_send(a), a) for _ in range(4)]
    send_waiters = [asyncio.create_task(lim.acquire_send(who)) for who in (b, b, b, a, a, a)]
    await asyncio.sleep(0)
    for ticket, who in tickets:
        lim.release_send(ticket, who=who, status=200)
    await asyncio.sleep(0)
    sent = [w.tenant for w, t in zip((b, b, b, a, a, a), send_waiters, strict=True) if t.done()]
    assert sorted(sent) == ["A", "A", "A", "B"]  # 3:1 of 4 in flight
    for t in send_waiters:
        t.cancel()


def test_sibling_engines_split_the_ceiling_from_their_first_try() -> None:
    # Two engine children of one `batchd serve` start sending at the same moment, before
    # the registry shows either to the other: each counts on both from the start.
    limits = Limits(siblings=2)
    assert limits.get("up", 16).target == 8
    limits.apply("me", {"me": sends("up")})  # the sibling has not registered yet
    assert limits.get("up", 16).ceiling == 8
    more = {"me": sends("up"), "w2": sends("up"), "w3": sends("up")}  # more workers than that
    limits.apply("me", more)
    assert limits.get("up", 16).ceiling == share_of(16, "me", ["w2", "w3"])
    # The sibling is live but sends to another backend only: this one is all ours.
    limits.apply("me", {"me": sends("up"), "w2": sends("other")})
    assert limits.get("up", 16).ceiling == 16
    local = limits.get("local", 64)  # a backend first used from now on
    limits.apply("me", {"me": sends("up"), "w2": sends("other")})
    assert local.ceiling == 64
    alone = Limits()
    lim = alone.get("alone", 16)
    alone.apply("me", {})
    assert lim.ceiling == 16  # one engine: the whole ceiling


def test_weighted_share_of_divides_by_demand_and_sums_to_the_limit() -> None:
    demand = {"a": 3.5, "b": 0.5}
    assert [weighted_share_of(8, me, demand) for me in ("a", "b")] == [7, 1]
    demand = {"a": 1.0, "b": 1.0, "c": 1.0}
    parts = [weighted_share_of(10, me, demand) for me in ("a", "b", "c")]
    assert parts == [share_of(10, me, ["a", "b", "c"]) for me in ("a", "b", "c")]
    assert sum(parts) == 10
    assert weighted_share_of(2, "c", {"a": 5.0, "b": 5.0, "c": 0.1}) == 1  # never starved


def test_a_tenant_with_work_on_two_workers_counts_half_its_weight_on_each() -> None:
    demand, spread = demands({"w1": ["heavy", "light"], "w2": ["light"], "w3": []},
                             {"heavy": 3.0, "light": 1.0}.__getitem__)  # fmt: skip
    assert spread == {"heavy": 1, "light": 2}
    assert demand == {"w1": 3.5, "w2": 0.5, "w3": 1.0}  # a worker naming no tenant: one


async def test_keys_keep_their_weights_across_workers() -> None:
    # This worker holds shards of both keys, a second one only of the light key. An even
    # split (4 and 4, each divided 3:1 locally) gave the light key 1 + 4 of 8 in flight;
    # by demand this worker gets 7, of which the light key 1 (its other worker 1) and the
    # heavy key 6: three to one over both workers together.
    weights = {"heavy": 3.0, "light": 1.0}
    limits = Limits(adaptive=False, weight_of=weights.__getitem__)
    lim = limits.get("up", 8)
    heavy, light = Claimant("heavy", "h1"), Claimant("light", "l1")
    lim.set_ceiling(1)
    await lim.acquire_slot(light)
    queued = [light] * 8 + [heavy] * 8
    waiters = [asyncio.create_task(lim.acquire_slot(who)) for who in queued]
    await asyncio.sleep(0)
    assert limits.usage() == {"up": {"keys": ["heavy", "light"], "holds": 1}}
    both, light_only = sends("up", keys=("heavy", "light")), sends("up", keys=("light",))
    limits.apply("me", {"me": both, "w2": light_only})
    assert lim.ceiling == 7
    await asyncio.sleep(0)
    granted = [who.tenant for who, t in zip(queued, waiters, strict=True) if t.done()]
    assert sorted(granted) == ["heavy"] * 6  # the light key holds its 1 already
    for t in waiters:
        t.cancel()


async def test_a_part_grows_only_into_what_the_others_do_not_hold() -> None:
    # w1 sent alone and holds all 16 slots when w2 starts sending: w2 gets nothing until
    # w1 has given up half, and the two never hold more than 16 together (what a crash
    # re-sends at most). Before, w2 took its 8 at once while w1 still held 16.
    asked: list[str] = []
    w1, w2 = Limits(adaptive=False), Limits(adaptive=False, on_change=lambda: asked.append("w2"))
    a = w1.get("up", 16)
    w1.apply("w1", {})
    held = [asyncio.create_task(a.acquire_slot()) for _ in range(16)]
    await asyncio.sleep(0)
    assert a.ceiling == 16 and all(t.done() for t in held)
    registry = {"w1": w1.usage()}
    assert registry["w1"]["up"]["holds"] == 16

    b = w2.get("up", 16)
    waiting = [asyncio.create_task(b.acquire_slot()) for _ in range(8)]
    await asyncio.sleep(0)
    assert asked  # a line waits for a first grant: the worker is asked to register now
    registry["w2"] = w2.apply("w2", registry)
    assert b.ceiling == 0 and w2.wanting() and not any(t.done() for t in waiting)

    registry["w1"] = w1.apply("w1", registry)  # w1 sees w2: its part is 8 ...
    assert a.ceiling == 8 and registry["w1"]["up"]["holds"] == 16  # ... it still holds 16
    registry["w2"] = w2.apply("w2", registry)
    assert b.ceiling == 0

    told: list[str] = []
    a.on_change = lambda: told.append("w1")
    for _ in range(8):
        a.release_slot()  # answers durable: w1 is down to its part
    assert told == ["w1"]  # w1 is asked to tell the registry at once
    registry["w1"] = w1.apply("w1", registry)
    assert registry["w1"]["up"]["holds"] == 8
    registry["w2"] = w2.apply("w2", registry)
    assert b.ceiling == 8 and not w2.wanting()
    await asyncio.sleep(0)
    assert all(t.done() for t in waiting)
    assert sum(r["up"]["holds"] for r in registry.values()) == 16


async def test_a_backend_left_idle_gives_its_part_back() -> None:
    limits = Limits(adaptive=False, idle_after=0.05)
    lim = limits.get("up", 16)
    limits.apply("me", {})
    await lim.acquire_slot()
    lim.release_slot()
    assert limits.apply("me", {}) == {"up": {"keys": [], "holds": 16}}
    await asyncio.sleep(0.1)  # not used for longer than idle_after
    assert limits.apply("me", {}) == {}
    assert lim.ceiling == 0  # so a worker starting to send meanwhile may take it all


async def test_lines_waiting_for_a_grant_keep_asking_however_long_they_wait() -> None:
    # Another worker holds the whole limit for longer than idle_after: the lines waiting
    # here still count as work for this backend, or this worker would stop asking and
    # the other would never give up a slot (nor would this one take one once it is free).
    limits = Limits(adaptive=False, idle_after=0.05)
    lim = limits.get("up", 4)
    others = {"w2": {"up": {"keys": ["k"], "holds": 4}}}
    limits.apply("me", others)
    waiter = asyncio.create_task(lim.acquire_slot())
    await asyncio.sleep(0.1)
    assert "up" in limits.apply("me", others)  # still listed: w2 will make room
    assert limits.wanting()
    others["w2"]["up"]["holds"] = 2  # w2 saw us and gave up its part
    limits.apply("me", others)
    await asyncio.wait_for(waiter, 1)
    assert lim.ceiling == 2
