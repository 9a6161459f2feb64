"""The dashboard at /ui, end to end: a real server, a real upstream, headless Chromium."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness import (
    BatchdProcess,
    StartBatchd,
    chat_line,
    create_batch,
    to_jsonl,
    wait_batch,
    wait_for,
)
from tenants.keys_cli import create_key
from upstream_server import Faults, UpstreamServer

pytest.importorskip("playwright", reason="the playwright package is not installed")
from playwright.sync_api import expect

KEYS = ["--api-key", "k1", "--api-key", "k2"]
PRICES = json.dumps({"test-*": {"input": 2.0, "output": 8.0}})


def open_dashboard(page: Any, server: BatchdProcess, key: str) -> None:
    page.goto(server.root_url + "/ui")
    assert page.url.endswith("/ui/")
    page.fill("#key-input", key)
    page.click("#key-save")


def row(page: Any, batch_id: str) -> Any:
    return page.locator(f'tr.batch[data-batch-id="{batch_id}"]')


def test_upload_watch_it_finish_and_download(
    page: Any, start_batchd: StartBatchd, upstream: UpstreamServer, tmp_path: Path
) -> None:
    upstream.reset(Faults(delay=0.05, reject_marker="BAD"))
    server = start_batchd(
        upstream=upstream.base_url,
        args=KEYS,
        api_key="k1",
        env={"BATCHD_UPSTREAM_CONCURRENCY": "2", "BATCHD_PRICES": PRICES},
    )
    open_dashboard(page, server, "k1")
    expect(page.locator("#empty")).to_be_visible()

    lines = [chat_line(i) for i in range(30)] + [chat_line(i, text="BAD") for i in (30, 31)]
    page.set_input_files(
        "#upload-file",
        files=[
            {"name": "reviews.jsonl", "mimeType": "application/jsonl", "buffer": to_jsonl(lines)}
        ],
    )
    page.select_option("#upload-endpoint", "/v1/chat/completions")
    page.click("#upload-submit")
    expect(page.locator("#message")).to_contain_text("Created batch_")
    batch_id = page.locator("#message").inner_text().split()[1]

    r = row(page, batch_id)
    expect(r).to_be_visible()
    expect(r).to_have_attribute("data-status", "completed")
    expect(r.locator(".bar")).to_have_attribute("aria-valuenow", "100")
    expect(r.locator(".progress-text")).to_contain_text("32 / 32 (100.0%)")
    expect(r.locator(".progress-text")).to_contain_text("30 ok, 2 failed")

    # The page's numbers are the server's: counts, tokens and cost at the configured prices.
    b = server.client.batches.retrieve(batch_id)
    assert b.status == "completed" and b.usage is not None
    usd = (b.usage.input_tokens * 2.0 + b.usage.output_tokens * 8.0) / 1e6
    expect(r.locator(".usage")).to_contain_text(f"{b.usage.input_tokens:,} in")
    expect(r.locator(".cost")).to_have_text(f"${usd:.4f}")

    # Errors by code: the two rejected lines.
    r.locator("button.errors-toggle").click()
    errors = page.locator(f'tr.errors[data-batch-id="{batch_id}"]')
    expect(errors.locator('li[data-code="http_400"]')).to_contain_text("2")

    with page.expect_download() as info:
        r.locator('button.download[data-kind="output"]').click()
    path = tmp_path / "output.jsonl"
    info.value.save_as(path)
    assert info.value.suggested_filename == f"{batch_id}_output.jsonl"
    out = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(o["custom_id"] for o in out) == sorted(f"r{i}" for i in range(30))
    assert all(o["response"]["status_code"] == 200 for o in out)


def test_cancel_a_running_batch(
    page: Any, start_batchd: StartBatchd, upstream: UpstreamServer
) -> None:
    upstream.reset(Faults(delay=0.3))
    server = start_batchd(
        upstream=upstream.base_url,
        args=KEYS,
        api_key="k1",
        env={"BATCHD_UPSTREAM_CONCURRENCY": "1", "BATCHD_CANCEL_GRACE": "1"},
    )
    slow = create_batch(server.client, [chat_line(i) for i in range(100)])
    open_dashboard(page, server, "k1")
    r = row(page, slow.id)
    expect(r).to_have_attribute("data-status", "in_progress")
    expect(r.locator(".eta")).not_to_have_text("")
    page.once("dialog", lambda dialog: dialog.accept())
    r.locator("button.cancel").click()
    expect(r).to_have_attribute("data-status", "cancelled")
    expect(r.locator("button.cancel")).to_have_count(0)

    final = wait_batch(server.client, slow.id)
    assert final.status == "cancelled"
    assert final.request_counts is not None
    r.locator("button.errors-toggle").click()
    errors = page.locator(f'tr.errors[data-batch-id="{slow.id}"]')
    unrun = final.request_counts.total - final.request_counts.completed
    expect(errors.locator('li[data-code="batch_cancelled"]')).to_contain_text(str(unrun))
    expect(r.locator(".cost")).to_have_text("cost unknown")


def test_a_key_sees_only_its_own_batches(
    page: Any, start_batchd: StartBatchd, upstream: UpstreamServer
) -> None:
    server = start_batchd(upstream=upstream.base_url, args=KEYS, api_key="k1")
    mine = create_batch(server.client, [chat_line(i) for i in range(3)])
    wait_batch(server.client, mine.id)

    open_dashboard(page, server, "k2")
    expect(page.locator("#empty")).to_be_visible()
    expect(page.locator("tr.batch")).to_have_count(0)

    page.fill("#key-input", "wrong-key")
    page.click("#key-save")
    expect(page.locator("#message")).to_contain_text("Incorrect API key")
    expect(page.locator("tr.batch")).to_have_count(0)

    page.fill("#key-input", "k1")
    page.click("#key-save")
    expect(row(page, mine.id)).to_have_attribute("data-status", "completed")
    expect(page.locator("#message")).to_be_hidden()


def test_the_signed_in_key_sees_its_own_usage(
    page: Any, start_batchd: StartBatchd, upstream: UpstreamServer
) -> None:
    server = start_batchd(upstream=upstream.base_url, args=KEYS, api_key="k1")
    team = create_key("team-a", "--weight", "2", "--max-enqueued-requests", "500",
                      data_dir=server.data_dir)  # fmt: skip
    theirs = server.make_client(api_key=team)

    def accepted() -> bool:
        status, _h, _b = server.http(
            "GET", "/v1/files", headers={"Authorization": f"Bearer {team}"}
        )
        return status == 200

    wait_for(accepted, timeout=5, what="team-a accepted")
    done = wait_batch(theirs, create_batch(theirs, [chat_line(i) for i in range(4)]).id)
    k1 = server.make_client(api_key="k1")
    wait_batch(k1, create_batch(k1, [chat_line(i) for i in range(2)]).id)

    open_dashboard(page, server, team)
    cells = page.locator("#usage-rows tr td")
    expect(cells.nth(0)).to_have_text("team-a")
    expect(cells.nth(1)).to_have_text("1")  # batches: its own only, not k1's
    expect(cells.nth(2)).to_have_text("4")  # requests
    expect(cells.nth(3)).to_have_text(f"{done.usage.input_tokens:,}")
    expect(cells.nth(5)).to_have_text("2")
    expect(cells.nth(6)).to_have_text("500 requests")
