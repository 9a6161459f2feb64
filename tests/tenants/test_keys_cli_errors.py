"""``batchd keys`` refuses bad input and an unreachable database with one clear line on
stderr and exit status 1, never a traceback; a password in the URL is not echoed."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import free_port
from tenants.keys_cli import keys_cli


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["create", "has space"], "Invalid key name 'has space'"),
        (["create", "w", "--weight", "0"], "Invalid weight 0"),
        (["revoke", "nobody"], "No key named 'nobody'"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path: Path, args: list[str], says: str) -> None:
    done = keys_cli(*args, data_dir=tmp_path / "data", check=False)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.strip().startswith(f"error: {says}"), done.stderr
    assert "Traceback" not in done.stderr


def test_a_name_is_never_reused(tmp_path: Path) -> None:
    keys_cli("create", "a", data_dir=tmp_path / "data")
    keys_cli("revoke", "a", data_dir=tmp_path / "data")
    again = keys_cli("create", "a", data_dir=tmp_path / "data", check=False)
    assert again.returncode == 1 and again.stdout == ""
    assert "already exists" in again.stderr


def test_an_unreachable_database_is_named_without_its_password() -> None:
    url = f"postgresql://postgres:hunter2@127.0.0.1:{free_port()}/test"
    done = keys_cli("list", "--database-url", url, check=False)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("error: cannot use the database postgresql://postgres:***@")
    assert "hunter2" not in done.stderr
