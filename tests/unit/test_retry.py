"""RetryPolicy: which statuses retry, backoff growth, cap, equal-jitter bounds, Retry-After."""

from __future__ import annotations

import itertools
import random

import pytest

from batchd.backends.http import parse_retry_after
from batchd.retry import RetryPolicy


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504])
def test_transient_statuses_retry(status: int) -> None:
    p = RetryPolicy(max_attempts=3)
    assert p.should_retry_status(status, 1)
    assert p.should_retry_status(status, 2)
    assert not p.should_retry_status(status, 3)  # the last try's answer stands


@pytest.mark.parametrize("status", [200, 400, 401, 403, 404, 413, 422])
def test_client_errors_never_retry(status: int) -> None:
    assert not RetryPolicy().should_retry_status(status, 1)


def test_can_retry_counts_tries() -> None:
    p = RetryPolicy(max_attempts=2)
    assert p.can_retry(1) and not p.can_retry(2)
    assert not RetryPolicy(max_attempts=1).can_retry(1)


def test_delays_grow_within_jitter_bounds_and_are_capped() -> None:
    p = RetryPolicy(base=0.5, cap=4.0)
    rng = random.Random(1)
    for attempt in range(1, 12):
        backoff = min(4.0, 0.5 * 2 ** (attempt - 1))
        samples = [p.delay(attempt, rng=rng) for _ in range(200)]
        assert all(backoff / 2 <= d <= backoff for d in samples), attempt
        assert max(samples) - min(samples) > backoff / 4  # really jittered
    assert max(p.delay(50, rng=rng) for _ in range(100)) <= 4.0


def test_equal_jitter_is_half_fixed_half_uniform() -> None:
    # Equal jitter: b/2 + uniform(0, b/2). Its mean is 3/4 b (full jitter's would be b/2,
    # a fixed +-25% jitter's 7/8 b), and the random half is spread over all of [b/2, b].
    p = RetryPolicy(base=8.0, cap=100.0)
    rng = random.Random(4)
    samples = [p.delay(1, rng=rng) for _ in range(4000)]
    assert 5.85 < sum(samples) / len(samples) < 6.15
    assert min(samples) >= 4.0 and max(samples) <= 8.0
    assert min(samples) < 4.2 and max(samples) > 7.8
    below = sum(d < 6.0 for d in samples) / len(samples)
    assert 0.45 < below < 0.55  # uniform over the random half


def test_mean_delay_doubles() -> None:
    p = RetryPolicy(base=1.0, cap=1000.0)
    rng = random.Random(2)
    means = [sum(p.delay(a, rng=rng) for _ in range(500)) / 500 for a in (1, 2, 3, 4)]
    for a, b in itertools.pairwise(means):
        assert 1.7 < b / a < 2.3


def test_retry_after_is_a_floor_and_is_capped() -> None:
    p = RetryPolicy(base=0.1, cap=5.0)
    rng = random.Random(3)
    assert all(p.delay(1, 2.0, rng=rng) == 2.0 for _ in range(50))
    assert p.delay(1, 60.0, rng=rng) == 5.0  # capped
    # A tiny Retry-After does not shorten our own backoff.
    assert all(0.4 <= p.delay(4, 0.001, rng=rng) <= 0.8 for _ in range(50))


@pytest.mark.parametrize(
    ("ms", "value", "expected"),
    [
        (None, "2", 2.0),
        (None, "0.5", 0.5),
        ("1500", "9", 1.5),
        (None, None, None),
        (None, "soon", None),
        (None, "-3", 0.0),
    ],
)
def test_parse_retry_after(ms: str | None, value: str | None, expected: float | None) -> None:
    assert parse_retry_after(ms, value) == expected


def test_parse_retry_after_http_date() -> None:
    import time
    from email.utils import formatdate

    got = parse_retry_after(None, formatdate(time.time() + 30, usegmt=True))
    assert got is not None and 25 <= got <= 31
