"""Standard Webhooks signatures: the published test vector, and what verify() rejects."""

from __future__ import annotations

import json

import pytest

from batchd.webhooks import InvalidSignature, WebhookSigner, batch_event

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_the_standard_webhooks_test_vector() -> None:
    signer = WebhookSigner(SECRET)
    sig = signer.signature("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    assert sig == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    # The prefix is optional, as in the reference libraries.
    assert (
        WebhookSigner(SECRET.removeprefix("whsec_")).signature(
            "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'
        )
        == sig
    )


def test_verify_accepts_fresh_signed_bodies_and_rejects_the_rest() -> None:
    signer = WebhookSigner(SECRET)
    body = b'{"a": 1}'
    headers = signer.headers("evt_1", 1_000_000, body)
    signer.verify(headers, body, now=1_000_010)
    # Several signatures (a rotated key): any match will do.
    signer.verify({**headers, "webhook-signature": "v1,bm9wZQ== " + headers["webhook-signature"]},
                  body, now=1_000_010)  # fmt: skip
    with pytest.raises(InvalidSignature):
        signer.verify(headers, b'{"a": 2}', now=1_000_010)
    with pytest.raises(InvalidSignature):
        signer.verify(headers, body, now=1_000_000 + 301)
    with pytest.raises(InvalidSignature):
        signer.verify({**headers, "webhook-id": "evt_2"}, body, now=1_000_010)
    with pytest.raises(InvalidSignature):
        signer.verify({"webhook-id": "evt_1"}, body, now=1_000_010)
    with pytest.raises(InvalidSignature):
        WebhookSigner("whsec_" + "QUJD" * 8).verify(headers, body, now=1_000_010)


@pytest.mark.parametrize("secret", ["whsec_not base64!", "whsec_", ""])
def test_a_malformed_secret_is_refused(secret: str) -> None:
    with pytest.raises(ValueError):
        WebhookSigner(secret)


def test_event_shape() -> None:
    for status in ("completed", "failed", "expired", "cancelled"):
        event = batch_event("batch_abc", status, 1700000000)
        assert event is not None
        body = json.loads(event.body())
        assert body == {
            "object": "event",
            "id": event.id,
            "type": f"batch.{status}",
            "created_at": 1700000000,
            "data": {"id": "batch_abc"},
        }
        assert event.id.startswith("evt_")
    assert batch_event("batch_abc", "in_progress", 1) is None
