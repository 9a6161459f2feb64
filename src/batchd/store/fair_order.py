"""The order in which workers claim shards: fair between tenants, by priority within one.

Every claim takes a shard from the batch that comes first by

1. whether its tenant should spread: a tenant that already runs a shard on the
   claiming worker while another working worker runs none of it comes last, so
   that worker (at capacity, through its newcomer claims) takes the piece instead;
2. its tenant's shards running anywhere (all workers), divided by the tenant's
   weight: the key with the least running work goes first; ties go to the tenant
   whose batch came first, so tenants alternate instead of interleaving by priority;
3. the batch's priority (``metadata.priority``), highest first: priority orders the
   batches *of one key*, never one key's batches before another key's;
4. the batch's shards running anywhere, fewest first: a key's batches share;
5. the batch's age (``seq``).

Why 1: inside a worker the backend's capacity is divided between the tenants that
have work *there* (engine/fair.py), so what a key gets is its share on every worker
it runs on. A worker with room for four shards would otherwise take all four pieces
of a newly arrived key's batch (it runs least), and the key would get its half of
one worker instead of half of each. Small batches are cut into pieces for each
live worker (engine/shards.py) so there is something to spread.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

WeightOf = Callable[[str], float]
"""A tenant's weight (> 0; 1.0 is the default share). Called while claiming and at
every grant of a fair gate (engine/fair.py), so it must be cheap (a dictionary read,
not a query) and must not raise."""

MIN_WEIGHT = 1e-9
"""Weights at or below zero count as this: such a tenant gets only what others leave."""


@dataclass(slots=True)
class Running:
    """Shards running right now: per tenant, per batch, and the tenants on one worker."""

    tenants: collections.Counter[str] = field(default_factory=collections.Counter)
    batches: collections.Counter[str] = field(default_factory=collections.Counter)
    mine: set[str] = field(default_factory=set)
    """Tenants with a shard running on the claiming worker."""
    spread: set[str] = field(default_factory=set)
    """Tenants of ``mine`` that some other worker running shards runs none of."""

    @classmethod
    def of(cls, rows: Iterable[Any], owner: str) -> Running:
        """From ``(batch_id, tenant, lease_owner)`` rows of running shards."""
        running = cls()
        where: dict[str, set[str]] = collections.defaultdict(set)
        for batch_id, tenant, lease_owner in rows:
            running.tenants[tenant] += 1
            running.batches[batch_id] += 1
            where[tenant].add(lease_owner)
        others = set().union(*where.values()) - {owner}
        running.mine = {t for t, owners in where.items() if owner in owners}
        running.spread = {t for t in running.mine if others - where[t]}
        return running


def claim_order(
    candidates: Iterable[Any], running: Running, weight_of: WeightOf | None = None
) -> Iterator[tuple[str, str]]:
    """``(batch_id, tenant)`` of ``(id, tenant, priority, seq)`` candidate batches, in
    the order their shards should be claimed."""
    rows = list(candidates)
    share: dict[str, float] = {}
    first: dict[str, int] = {}
    for _, tenant, _, seq in rows:
        if tenant not in share:
            weight = weight_of(tenant) if weight_of is not None else 1.0
            share[tenant] = running.tenants[tenant] / max(weight, MIN_WEIGHT)
        first[tenant] = min(seq, first.get(tenant, seq))
    rows.sort(
        key=lambda r: (
            r[1] in running.spread,
            share[r[1]],
            first[r[1]],
            -r[2],
            running.batches[r[0]],
            r[3],
        )
    )
    for batch_id, tenant, _, _ in rows:
        yield batch_id, tenant
