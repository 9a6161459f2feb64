"""The API process's view of its engine children's per-backend limits."""

from __future__ import annotations

from batchd.server.engine_process import EngineProcesses
from batchd.settings import Settings


async def _none(_batch_id: str) -> None:
    return None


def snap(limit: float, in_flight: int) -> dict[str, object]:
    return {"ceiling": 512, "limit": limit, "in_flight": in_flight, "server_queue": 0.0,
            "server_running": 40, "phase": "hold", "source": "metrics", "cuts": 1}  # fmt: skip


def test_several_children_add_up_even_when_they_report_the_same() -> None:
    engines = EngineProcesses(Settings(engine_processes=2), lookup=_none)
    for child in engines.children:
        child.limits = {"vllm": snap(32.0, 30)}  # identical reports: both still count
    total = engines.limits_snapshot()["vllm"]
    assert (total["ceiling"], total["limit"], total["in_flight"], total["cuts"]) == (
        1024, 64.0, 60, 2
    )
    assert total["server_running"] == 40 and total["phase"] == "hold"  # the server's own


def test_one_child_is_reported_as_it_is() -> None:
    engines = EngineProcesses(Settings(engine_processes=1), lookup=_none)
    engines.children[0].limits = {"vllm": snap(32.0, 30)}
    assert engines.limits_snapshot() == {"vllm": snap(32.0, 30)}
