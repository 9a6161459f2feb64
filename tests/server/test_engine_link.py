"""The wire between the API process and its engine child (server/engine_link.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from batchd.engine.events import Observers
from batchd.server.engine_child import read_settings
from batchd.server.engine_link import EventForwarder, EventReplayer
from batchd.settings import BackendConfig, ModelPrice, Settings
from batchd.store.records import BatchRecord


class Recorder:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, int | None, float, int]] = []
        self.retries: list[tuple[str, int | None]] = []
        self.lines: list[tuple[str, bool]] = []
        self.finished: list[str] = []

    def request_finished(
        self, *, backend: str, endpoint: str, status: int | None, seconds: float, attempt: int
    ) -> None:
        self.requests.append((backend, endpoint, status, seconds, attempt))

    def request_retried(self, *, backend: str, status: int | None) -> None:
        self.retries.append((backend, status))

    def line_recorded(self, *, batch_id: str, ok: bool) -> None:
        self.lines.append((batch_id, ok))

    def batch_finished(self, batch: BatchRecord) -> None:
        self.finished.append(batch.id)


def test_every_event_arrives_once_and_a_finished_batch_after_its_lines() -> None:
    async def scenario() -> tuple[Recorder, list[bytes], bool]:
        sent: list[bytes] = []
        fwd = EventForwarder(sent.append)
        fwd.request_finished(backend="b", endpoint="/v1/x", status=200, seconds=0.5, attempt=1)
        fwd.request_finished(backend="b", endpoint="/v1/x", status=200, seconds=0.25, attempt=1)
        fwd.request_finished(backend="b", endpoint="/v1/x", status=None, seconds=1.0, attempt=2)
        fwd.request_retried(backend="b", status=429)
        fwd.line_recorded(batch_id="batch_1", ok=True)
        fwd.line_recorded(batch_id="batch_1", ok=True)
        fwd.line_recorded(batch_id="batch_1", ok=False)
        assert sent == []  # gathered, not sent per event
        batch = BatchRecord.__new__(BatchRecord)
        batch.id = "batch_1"
        fwd.batch_finished(batch)
        ready = False

        def on_ready() -> None:
            nonlocal ready
            ready = True

        fwd.ready()
        rec = Recorder()

        async def lookup(batch_id: str) -> BatchRecord | None:
            return batch if batch_id == "batch_1" else None

        replayer = EventReplayer(Observers([rec]), lookup, on_ready)
        for line in b"".join(sent).splitlines(keepends=True):
            replayer.replay(line)
        replayer.replay(b"not json\n")  # logged and ignored
        await replayer.drain()
        return rec, sent, ready

    rec, sent, ready = asyncio.run(scenario())
    assert len(sent) == 3  # the gathered events, the finished batch, ready
    assert sorted(rec.requests, key=repr) == sorted(
        [("b", "/v1/x", 200, 0.25, 1), ("b", "/v1/x", 200, 0.5, 1), ("b", "/v1/x", None, 1.0, 2)],
        key=repr,
    )
    assert rec.retries == [("b", 429)]
    assert sorted(rec.lines) == [("batch_1", False), ("batch_1", True), ("batch_1", True)]
    assert rec.finished == ["batch_1"]
    assert ready


def test_settings_reach_the_child_unchanged(tmp_path: Path) -> None:
    import os

    settings = Settings(
        data_dir=tmp_path,
        api_keys=["k1", "k2"],
        backends=[BackendConfig(name="a", base_url="http://h/v1", models=["m-*"], concurrency=3)],
        prices={"m-*": ModelPrice(input=1.5, output=2.0)},
        local={"chat": {"tiny": {"path": "/x.gguf"}}},
        completion_windows=["24h", "1h"],
        upstream="http://u/v1",
        engine_process=True,
    )
    read, write = os.pipe()
    os.write(write, settings.model_dump_json().encode() + b"\n\n")
    os.close(write)
    try:
        assert read_settings(read) == settings
    finally:
        os.close(read)
