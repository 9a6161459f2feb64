"""Running ``batchd keys`` the way an operator does: a subprocess on the server's
data dir or database, reading its output; and asking a server whether it takes a key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import openai

from harness import BatchdProcess


def keys_cli(
    *args: str,
    data_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "batchd", "keys", *args]
    if data_dir is not None:
        argv += ["--data-dir", str(data_dir)]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHD_")}
    full_env.update(env or {})
    done = subprocess.run(argv, capture_output=True, text=True, env=full_env, timeout=60)
    if check and done.returncode != 0:
        raise AssertionError(f"batchd keys {' '.join(args)} failed:\n{done.stderr}")
    return done


def create_key(name: str, *flags: str, **kwargs: Any) -> str:
    """The new key's secret: the last line of stdout."""
    out = keys_cli("create", name, *flags, **kwargs).stdout
    secret = out.strip().splitlines()[-1]
    assert secret.startswith("sk-batchd-"), out
    return secret


def list_keys(**kwargs: Any) -> dict[str, dict[str, Any]]:
    out = keys_cli("list", "--json", **kwargs).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    return {row["name"]: row for row in rows}


def accepted(client: openai.OpenAI) -> bool:
    """Whether the server takes the client's key now (401: not, or not yet)."""
    try:
        client.files.list()
    except openai.AuthenticationError:
        return False
    return True


def accepts(proc: BatchdProcess, key: str) -> bool:
    return accepted(proc.make_client(api_key=key))
