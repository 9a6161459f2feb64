"""The order in which workers claim shards: fair between tenants, by priority within one.

Every claim takes a shard from the batch that comes first by

1. its tenant's shards running anywhere (all workers), divided by the tenant's
   weight: the key with the least running work goes first; ties go to the tenant
   whose batch came first, so tenants alternate instead of interleaving by priority;
2. the batch's priority (``metadata.priority``), highest first: priority orders the
   batches *of one key*, never one key's batches before another key's;
3. the batch's shards running anywhere, fewest first: a key's batches share;
4. the batch's age (``seq``).

Shards are small enough (engine/validate.py) that every worker can take a piece of
a small batch, so a key with one batch gets its share on each worker that holds
another key's work. The same rule, applied per request, divides each backend's
capacity inside a worker (engine/fair.py).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

WeightOf = Callable[[str], float]

MIN_WEIGHT = 1e-9
"""Weights at or below zero count as this: such a tenant gets only what others leave."""


@dataclass(slots=True)
class Running:
    """Shards running right now: per tenant, per batch, and the tenants on one worker."""

    tenants: collections.Counter[str] = field(default_factory=collections.Counter)
    batches: collections.Counter[str] = field(default_factory=collections.Counter)
    mine: set[str] = field(default_factory=set)
    """Tenants with a shard running on the claiming worker."""

    @classmethod
    def of(cls, rows: Iterable[Any], owner: str) -> Running:
        """From ``(batch_id, tenant, lease_owner)`` rows of running shards."""
        running = cls()
        for batch_id, tenant, lease_owner in rows:
            running.tenants[tenant] += 1
            running.batches[batch_id] += 1
            if lease_owner == owner:
                running.mine.add(tenant)
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
            share[r[1]],
            first[r[1]],
            -r[2],
            running.batches[r[0]],
            r[3],
        )
    )
    for batch_id, tenant, _, _ in rows:
        yield batch_id, tenant
