"""Versioned schema migrations (Alembic), run by :func:`batchd.store.migrate.upgrade`.

Each file in ``versions/`` is one step; ``0001`` is the schema batchd created with
``metadata.create_all`` before migrations existed (such databases are stamped with it).
"""
