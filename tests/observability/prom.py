"""Reading a batchd server's ``/metrics`` in tests."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from harness import BatchdProcess

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(server: BatchdProcess) -> Samples:
    """Every sample, keyed by (name, labels); fetched with no API key at all."""
    with urllib.request.urlopen(server.root_url + "/metrics", timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["content-type"].startswith("text/plain")
        text = resp.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum over every series of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= lab)
