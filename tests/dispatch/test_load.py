"""Reading a server's load gauges (backends/load.py) and the priority field (http.py)."""

from __future__ import annotations

import orjson
import pytest

from batchd.backends.http import with_priority
from batchd.backends.load import metrics_url_for, parse_load

VLLM = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 7.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 3.0
vllm:num_requests_waiting{engine="1",model_name="m"} 2.0
# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage.
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{engine="0",model_name="m"} 0.5
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (VLLM, (7, 5)),  # summed over engines
        (
            'sglang:num_running_reqs{model_name="m"} 4\nsglang:num_queue_reqs{model_name="m"} 1\n',
            (4, 1),
        ),
        ("llamacpp:requests_processing 2\nllamacpp:requests_deferred 6\n", (2, 6)),
        ("tgi_batch_current_size 9\ntgi_queue_size 0\n", (9, 0)),
        ("process_cpu_seconds_total 3\n", None),  # some other exporter: no load known
        ("<html>not prometheus</html>", None),
    ],
)
def test_parse_load(text: str, expected: tuple[int, int] | None) -> None:
    assert parse_load(text) == expected


def test_metrics_url_is_beside_v1_or_configured() -> None:
    assert metrics_url_for("http://gpu:8000/v1", None) == "http://gpu:8000/metrics"
    assert metrics_url_for("http://gpu:8000/v1/", None) == "http://gpu:8000/metrics"
    assert metrics_url_for("http://gpu:8000/v1", "http://gpu:9000/m") == "http://gpu:9000/m"
    assert metrics_url_for("http://gpu:8000/v1", "off") is None


@pytest.mark.parametrize("body", [b'{"model":"m","messages":[]}', b"{}", b' {\n "a": 1}'])
def test_priority_is_spliced_in_and_the_users_own_wins(body: bytes) -> None:
    out = orjson.loads(with_priority(body, b'{"priority":7,'))
    assert out["priority"] == 7 and {k: v for k, v in out.items() if k != "priority"} == (
        orjson.loads(body)
    )
    mine = orjson.loads(with_priority(b'{"priority":-1,"model":"m"}', b'{"priority":7,'))
    assert mine["priority"] == -1
