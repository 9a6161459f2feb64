"""Bringing a database to the current schema at start-up (Alembic, in-process).

Databases made before migrations existed (by ``metadata.create_all``) have the
tables of revision ``0001`` but no ``alembic_version``: they are stamped with it,
then upgraded like any other. On PostgreSQL an advisory lock makes processes that
start together migrate one after another.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

import batchd.migrations

BASELINE = "0001"
"""The revision whose schema ``create_all`` produced before migrations existed."""
_LOCK_KEY = 0x62617463  # "batc": any constant shared by every batchd process


def _config(conn: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(batchd.migrations.__file__).parent))
    cfg.attributes["connection"] = conn
    return cfg


def upgrade(conn: Connection) -> None:
    """Migrate to the newest revision, inside the caller's transaction."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
    cfg = _config(conn)
    tables = set(inspect(conn).get_table_names())
    if "batches" in tables and "alembic_version" not in tables:
        command.stamp(cfg, BASELINE)
    command.upgrade(cfg, "head")


def current_revision(conn: Connection) -> str | None:
    if "alembic_version" not in inspect(conn).get_table_names():
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
