"""Key secrets: how they look, how they are stored (a digest), whose tenant they are."""

from __future__ import annotations

import hashlib
import re
import secrets

PREFIX = "sk-batchd-"
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""Key names: what a metric label, a log line and a shell argument carry safely."""


def new_secret() -> str:
    """A fresh secret: the prefix and 256 random bits (URL-safe base64)."""
    return PREFIX + secrets.token_urlsafe(32)


def digest_of(secret: str) -> str:
    """What is stored of a secret (SHA-256, hex). The secrets are random, so a plain
    hash is enough: nothing to guess that a slow hash would protect."""
    return hashlib.sha256(secret.encode()).hexdigest()


def tenant_of(secret: str) -> str:
    """The tenant a key's requests belong to: the first 32 hex digits of its digest, the
    same for a key given with ``--api-key`` and one created with ``batchd keys``."""
    return digest_of(secret)[:32]


def label_of(tenant: str) -> str:
    """A name for a tenant that has no key row (a static key, or the open server's
    ``public``): never the secret, only a short prefix of its digest."""
    return tenant if tenant == "public" else f"static-{tenant[:8]}"
