"""Identifiers in OpenAI's shapes: ``file-…``, ``batch_…``, ``batch_req_…``, ``upload_…``,
``part_…``.

Ids are random (never derived from user input) and contain only ``[A-Za-z0-9_-]``,
so they are safe to use as storage keys; :func:`is_valid_id` checks an id that
came from a client before it goes anywhere near storage.
"""

from __future__ import annotations

import random
import re
import secrets

_ID_RE = re.compile(r"^(file-|batch_|batch_req_|upload_|part_)[A-Za-z0-9]{8,64}$")


def _token() -> str:
    return secrets.token_hex(12)


def new_file_id() -> str:
    return f"file-{_token()}"


def new_batch_id() -> str:
    return f"batch_{_token()}"


def new_upload_id() -> str:
    return f"upload_{_token()}"


def new_part_id() -> str:
    return f"part_{_token()}"


# Per-line ids need uniqueness, not secrecy (ownership is checked on every lookup);
# a seeded PRNG avoids a getrandom() syscall per request line.
_FAST = random.Random(secrets.randbits(128))


def next_request_token() -> str:
    """A unique token for per-line ids (not a secret)."""
    return f"{_FAST.getrandbits(96):024x}"


def new_request_id() -> str:
    return f"batch_req_{next_request_token()}"


def is_valid_id(value: str) -> bool:
    """True when ``value`` has the shape of an id batchd could have issued."""
    return bool(_ID_RE.match(value))
