"""Running the request lines of one shard against their backends.

Concurrency is bounded per backend (engine/limits.py): a request holds a slot of
this worker's share of the backend's limit from the first try until its result is
durable, so at most ``concurrency`` requests per backend can be lost to a crash and
re-sent; each try also waits for room under the backend's capacity-seeking limit
(engine/capacity.py). Lines go out in prompt-prefix order within a bounded window
(engine/prefix.py), so server prefix caches hit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import orjson

from batchd.backends.base import BackendResponse, BackendUnavailable
from batchd.backends.router import Route, Router
from batchd.blobs.base import BlobStore
from batchd.engine import outcome
from batchd.engine.events import Observers
from batchd.engine.fair import Claimant
from batchd.engine.limits import BackendLimit, Limits
from batchd.engine.prefix import in_prefix_order, prompt_key
from batchd.engine.writer import ResultWriter
from batchd.jsonl import Line, iter_lines
from batchd.retry import RetryPolicy
from batchd.store.base import Store
from batchd.store.records import ResultRow, ShardRecord
from batchd.validation import LineError, Task, parse_request_line

log = logging.getLogger(__name__)


def _line_size(item: tuple[Line, Task]) -> int:
    return item[0].end - item[0].start


@dataclass(frozen=True, slots=True)
class ShardJob:
    shard: ShardRecord
    endpoint: str
    input_file_id: str
    tenant: str
    """The batch's API key digest: backend capacity is shared fairly between tenants."""
    priority: int
    """The batch's ``metadata.priority``: orders the batches of one tenant."""

    @property
    def claimant(self) -> Claimant:
        return Claimant(self.tenant, self.shard.batch_id, self.priority)


class Executor:
    def __init__(
        self,
        *,
        store: Store,
        blobs: BlobStore,
        router: Router,
        policy: RetryPolicy,
        writer: ResultWriter,
        cancel_grace: float,
        observers: Observers | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.limits = limits or Limits()
        self._observers = observers or Observers()
        self._store = store
        self._blobs = blobs
        self._router = router
        self._policy = policy
        self._writer = writer
        self._grace = cancel_grace

    def _limit(self, route: Route) -> BackendLimit:
        return self.limits.get(
            route.backend.name,
            route.concurrency,
            adaptive=route.adaptive,
            background=route.background,
            slowdown=route.slowdown,
            probe=getattr(route.backend, "server_load", None),
        )

    async def run(self, job: ShardJob, stopped: Callable[[], bool]) -> bool:
        """Run every line of the shard that has no result yet.

        Returns True when the shard is finished, False when it stopped early
        (batch stopping) or a result could not be stored.
        """
        shard, who = job.shard, job.claimant
        done = await self._store.done_lines(shard.batch_id, shard.first_line, shard.last_line)
        inflight: set[asyncio.Task[None]] = set()
        failures: list[BaseException] = []

        def track(task: asyncio.Task[None], sem: BackendLimit | None) -> None:
            inflight.add(task)

            def finished(t: asyncio.Task[None]) -> None:
                inflight.discard(t)
                if sem is not None:
                    sem.release_slot(who)
                if not t.cancelled() and t.exception() is not None:
                    failures.append(t.exception())  # type: ignore[arg-type]

            task.add_done_callback(finished)

        async for line, parsed in in_prefix_order(
            self._tasks(job, done), key=lambda lt: prompt_key(lt[1].body), size=_line_size
        ):
            if stopped() or failures:
                break
            route = self._router.resolve(parsed.model)
            if route is None:
                message = (
                    f"No backend serves model {parsed.model!r}: start batchd with --upstream, "
                    "add a [[backends]] entry that routes it, or use an embedded model "
                    "(GET /v1/models lists what is routable)."
                )
                row = ResultRow(
                    shard.batch_id,
                    line.number,
                    parsed.custom_id,
                    False,
                    outcome.error_line(parsed.custom_id, "model_not_available", message),
                )
                track(asyncio.create_task(self._writer.submit(row)), None)
                continue
            sem = self._limit(route)
            await sem.acquire_slot(who)
            if stopped():  # it may have stopped while we waited for room
                sem.release_slot(who)
                break
            body = orjson.dumps(parsed.body)
            coro = self._one(who, line.number, parsed.custom_id, job.endpoint, body, route)
            track(asyncio.create_task(coro), sem)

        if stopped() and inflight:
            # Give requests already sent a chance to finish, then abandon them: their
            # lines are reported as never run.
            _, pending = await asyncio.wait(set(inflight), timeout=self._grace)
            for task in pending:
                task.cancel()
        while inflight:
            await asyncio.wait(set(inflight))
        if failures:
            log.error(
                "shard %s/%d: %d results not stored: %r",
                shard.batch_id,
                shard.shard_no,
                len(failures),
                failures[0],
            )
            return False
        return not stopped()

    async def _tasks(self, job: ShardJob, done: set[int]) -> AsyncIterator[tuple[Line, Task]]:
        """The shard's request lines that have no result yet, in file order."""
        shard = job.shard
        lines = iter_lines(
            self._blobs.read(job.input_file_id, shard.start_offset, shard.end_offset),
            first_number=shard.first_line,
            base_offset=shard.start_offset,
        )
        async for line in lines:
            if line.blank or line.number in done:
                continue
            parsed = parse_request_line(line.data, line=line.number, endpoint=job.endpoint)
            if isinstance(parsed, LineError):  # the file changed under us: never in practice
                continue
            yield line, parsed

    async def _send(
        self, route: Route, endpoint: str, body: bytes, who: Claimant
    ) -> BackendResponse:
        """One try, under the backend's capacity-seeking limit (which learns from it)."""
        limit = self._limit(route)
        token = await limit.acquire_send(who)
        try:
            resp = await route.backend.send(endpoint, body)
        except BaseException:
            limit.release_send(token, who=who, status=None)
            raise
        limit.release_send(
            token, who=who, status=resp.status_code, retry_after=resp.retry_after, body=resp.body
        )
        return resp

    async def _one(
        self,
        who: Claimant,
        line_no: int,
        custom_id: str,
        endpoint: str,
        body: bytes,
        route: Route,
    ) -> None:
        policy, batch_id = self._policy, who.batch_id
        attempt = 0
        while True:
            attempt += 1
            started = time.perf_counter()
            obs, name = self._observers, route.backend.name
            try:
                resp = await self._send(route, endpoint, body, who)
            except BackendUnavailable as exc:
                obs.request_finished(
                    backend=name,
                    endpoint=endpoint,
                    status=None,
                    seconds=time.perf_counter() - started,
                    attempt=attempt,
                )
                if policy.can_retry(attempt):
                    obs.request_retried(backend=name, status=None)
                    await asyncio.sleep(policy.delay(attempt))
                    continue
                data = outcome.error_line(custom_id, exc.kind, f"{exc} (after {attempt} tries)")
                row = ResultRow(batch_id, line_no, custom_id, False, data)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a backend bug must not wedge the batch
                log.exception(
                    "backend %s failed on %s line %d", route.backend.name, batch_id, line_no
                )
                data = outcome.error_line(custom_id, "backend_error", f"{type(exc).__name__}")
                row = ResultRow(batch_id, line_no, custom_id, False, data)
                break
            obs.request_finished(
                backend=name,
                endpoint=endpoint,
                status=resp.status_code,
                seconds=time.perf_counter() - started,
                attempt=attempt,
            )
            if resp.status_code != 200 and policy.should_retry_status(resp.status_code, attempt):
                obs.request_retried(backend=name, status=resp.status_code)
                await asyncio.sleep(policy.delay(attempt, resp.retry_after))
                continue
            body_bytes, parsed = outcome.parse_body(resp.body)
            ok = resp.status_code == 200 and "error" not in (
                parsed if isinstance(parsed, dict) else {}
            )
            data = outcome.response_line(custom_id, resp.status_code, resp.request_id, body_bytes)
            row = ResultRow(
                batch_id, line_no, custom_id, ok, data, outcome.usage_of(parsed) if ok else None
            )
            break
        self._observers.line_recorded(batch_id=batch_id, ok=row.ok)
        await self._writer.submit(row)
