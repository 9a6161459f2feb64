"""Schemathesis against the live server's own ``/openapi.json`` (loopback only):
generated requests for every operation are never answered with a 5xx, and
every answer conforms to the schema (status code documented, body shaped as
declared, content type as declared)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks as st_checks

from harness import BatchdProcess, chat_line, create_batch
from upstream_server import UpstreamServer

KEY = "fuzz-key"


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory, upstream_server: UpstreamServer
) -> Iterator[BatchdProcess]:
    proc = BatchdProcess(
        tmp_path_factory.mktemp("openapi") / "data",
        upstream=upstream_server.base_url,
        args=["--api-key", KEY],
        api_key=KEY,
        env={"BATCHD_MAX_FILE_BYTES": str(1024 * 1024)},
    ).start()
    # Something to find: a file and a batch, so not every lookup is a 404.
    create_batch(proc.client, [chat_line(i) for i in range(3)])
    yield proc
    proc.stop()


CHECKS = [
    st_checks.not_a_server_error,
    st_checks.status_code_conformance,
    st_checks.content_type_conformance,
    st_checks.response_schema_conformance,
]


@pytest.mark.slow
def test_api_never_5xx_and_conforms(live: BatchdProcess) -> None:
    assert live.root_url.startswith("http://127.0.0.1:")
    api = schemathesis.openapi.from_url(live.root_url + "/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 9, [op.label for op in operations]
    tried = []
    for op in operations:

        @given(case=op.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
        def run(case: schemathesis.Case) -> None:
            case.call_and_validate(headers={"Authorization": f"Bearer {KEY}"}, checks=CHECKS)

        run()
        tried.append(op.label)
    print(f"schemathesis: {len(tried)} operations")
