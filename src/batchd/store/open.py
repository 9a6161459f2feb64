"""Choosing the store from the settings."""

from __future__ import annotations

from batchd.settings import Settings
from batchd.store.base import Store
from batchd.store.sql import SqlStore


def open_store(settings: Settings) -> Store:
    """The store ``settings.database_url`` names (SQLite in the data dir by default);
    call ``open()`` on it before use."""
    return SqlStore(
        settings.resolved_database_url(),
        sqlite_synchronous=settings.sqlite_synchronous,
        pool_size=settings.db_pool_size,
    )
