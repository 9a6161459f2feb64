"""What a model server says about its own load: running and waiting requests.

vLLM, SGLang, llama.cpp's server and TGI publish Prometheus gauges at ``/metrics``
beside their OpenAI-compatible ``/v1``. :func:`parse_load` reads the pair each
names (summed over label sets: several models or engines), so the engine can keep
the server's queue short without guessing from timings.
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

# (running gauge, waiting gauge) per server family, first match wins.
GAUGES: tuple[tuple[str, str], ...] = (
    ("vllm:num_requests_running", "vllm:num_requests_waiting"),
    ("sglang:num_running_reqs", "sglang:num_queue_reqs"),
    ("llamacpp:requests_processing", "llamacpp:requests_deferred"),
    ("tgi_batch_current_size", "tgi_queue_size"),
)


def metrics_url_for(base_url: str, configured: str | None) -> str | None:
    """The load gauges' URL: configured, or ``/metrics`` beside a ``…/v1`` base URL."""
    if configured is not None:
        return None if configured.strip().lower() in ("", "off", "none") else configured
    base = base_url.rstrip("/")
    return base.removesuffix("/v1") + "/metrics"


def parse_load(text: str) -> tuple[int, int] | None:
    """``(running, waiting)`` from a Prometheus text page; None if no known pair is there."""
    values: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                values[sample.name] = values.get(sample.name, 0.0) + sample.value
    except (ValueError, TypeError, IndexError):
        return None
    for running, waiting in GAUGES:
        if running in values and waiting in values:
            return int(values[running]), int(values[waiting])
    return None
