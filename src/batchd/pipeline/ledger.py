"""The run's ledger: one SQLite file that records every step, so a killed run resumes.

Three tables. ``meta`` holds the run's identity (run id, fingerprint, endpoint)
and its yes/no flags (:data:`~batchd.pipeline.states.MetaKey`,
:data:`~batchd.pipeline.states.Flag`). ``chunks`` holds one row per batch file,
walking the :class:`~batchd.pipeline.states.ChunkState` states::

    planned -> uploading -> uploaded -> creating -> submitted -> finished -> done
                 (intent)                 (intent)

``uploading``/``creating`` are *intents*, committed before the API call: a run
that dies after the call but before recording its result finds the intent on
restart and looks for the file or batch on the server instead of making another.
``requests`` holds one row per ``custom_id``: where its line lives in its first
chunk file, which chunk carries it now, and its
:class:`~batchd.pipeline.states.LineStatus` and outcome once known.

A ledger is a file in the user's state dir that a later batchd resumes, so its
format only grows: flags are stored as ``true``/``false``, and the ``1``/``0``
that ledgers written before December 2026 hold still read as yes and no.

Only the process running the batch writes, apart from ``cancel`` setting a flag;
WAL mode lets ``status`` read meanwhile.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict, Unpack

import orjson

from batchd.pipeline.answers import Outcome
from batchd.pipeline.states import Answered, ChunkState, Flag, LineStatus, MetaKey

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    id TEXT PRIMARY KEY,
    round INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    path TEXT NOT NULL,
    requests INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT '{ChunkState.PLANNED}',
    attempt INTEGER NOT NULL DEFAULT 0,
    file_id TEXT,
    batch_id TEXT,
    batch_status TEXT,
    output_file_id TEXT,
    error_file_id TEXT,
    completed INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    intent_at REAL,
    not_before REAL NOT NULL DEFAULT 0,
    note TEXT
);
CREATE TABLE IF NOT EXISTS requests (
    custom_id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    src_chunk TEXT NOT NULL,
    src_offset INTEGER NOT NULL,
    src_length INTEGER NOT NULL,
    chunk TEXT NOT NULL,
    round INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT '{LineStatus.PENDING}',
    reason TEXT,
    answer BLOB,
    result BLOB,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cached_tokens INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS requests_chunk ON requests (chunk, status);
CREATE INDEX IF NOT EXISTS requests_status ON requests (status, seq);
"""

_YES, _NO = "true", "false"
_LEGACY_YES = "1"
"""How ledgers written before December 2026 stored a yes (and ``"0"`` a no)."""


@dataclass(frozen=True, slots=True)
class ChunkRow:
    id: str
    round: int
    seq: int
    path: str
    requests: int
    bytes: int
    state: ChunkState
    attempt: int
    file_id: str | None
    batch_id: str | None
    batch_status: str | None
    output_file_id: str | None
    error_file_id: str | None
    completed: int
    failed: int
    intent_at: float | None
    not_before: float
    note: str | None


class ChunkUpdate(TypedDict, total=False):
    """The columns a step may change (:meth:`Ledger.update_chunk`): a misspelt one is a
    type error, not an SQL error in the middle of a run."""

    state: ChunkState
    attempt: int
    file_id: str | None
    batch_id: str | None
    batch_status: str | None
    output_file_id: str | None
    error_file_id: str | None
    completed: int
    failed: int
    intent_at: float
    not_before: float
    note: str | None


@dataclass(frozen=True, slots=True)
class RequestEntry:
    custom_id: str
    seq: int
    src_chunk: str
    src_offset: int
    src_length: int


@dataclass(frozen=True, slots=True)
class StoredOutcome:
    status: LineStatus
    reason: str | None
    answer: Any
    result: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Totals:
    requests: int
    ok: int
    failed: int
    length: int
    pending: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int


class Ledger:
    """The SQLite ledger of one run (see the module docstring)."""

    FILENAME = "ledger.sqlite"

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / self.FILENAME
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    @classmethod
    def exists(cls, state_dir: Path) -> bool:
        return (state_dir / cls.FILENAME).is_file()

    def close(self) -> None:
        self._db.close()

    # ---------------------------------------------------------------- meta

    def get(self, key: MetaKey) -> str | None:
        return self._read(key)

    def set(self, key: MetaKey, value: str) -> None:
        self._write(key, value)

    def flag(self, name: Flag) -> bool:
        """A yes/no fact; never set reads as no."""
        return self._read(name) in (_YES, _LEGACY_YES)

    def set_flag(self, name: Flag, value: bool) -> None:
        self._write(name, _YES if value else _NO)

    def _read(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _write(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # --------------------------------------------------------------- plan

    def reset_plan(self) -> None:
        """Forget a plan that was interrupted before it was complete."""
        with self._tx():
            self._db.execute("DELETE FROM chunks")
            self._db.execute("DELETE FROM requests")
            self._db.execute("DELETE FROM meta WHERE key = 'planned'")

    def add_chunk(
        self, chunk_id: str, round_: int, seq: int, path: Path, n: int, size: int
    ) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO chunks (id, round, seq, path, requests, bytes) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (chunk_id, round_, seq, str(path), n, size),
        )

    def commit_plan(
        self,
        chunks: list[tuple[str, Path, int, int]],
        meta: dict[MetaKey, str],
        *,
        batch_file: bool,
    ) -> None:
        """Record a complete plan's chunks and mark the plan done, atomically."""
        with self._tx():
            for seq, (chunk_id, path, n, size) in enumerate(chunks):
                self.add_chunk(chunk_id, 0, seq, path, n, size)
            for key, value in meta.items():
                self.set(key, value)
            self.set_flag("batch_file", batch_file)
            self.set_flag("planned", True)

    def add_requests(self, entries: Iterable[RequestEntry]) -> None:
        with self._tx():
            self._db.executemany(
                "INSERT INTO requests (custom_id, seq, src_chunk, src_offset, src_length, chunk) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    (e.custom_id, e.seq, e.src_chunk, e.src_offset, e.src_length, e.src_chunk)
                    for e in entries
                ),
            )

    # ------------------------------------------------------------- chunks

    def chunks(self, *, round_: int | None = None) -> list[ChunkRow]:
        sql = "SELECT * FROM chunks"
        args: tuple[Any, ...] = ()
        if round_ is not None:
            sql += " WHERE round = ?"
            args = (round_,)
        return [_chunk_row(row) for row in self._db.execute(sql + " ORDER BY round, seq", args)]

    def chunk(self, chunk_id: str) -> ChunkRow:
        row = self._db.execute("SELECT * FROM chunks WHERE id = ?", (chunk_id,)).fetchone()
        return _chunk_row(row)

    def update_chunk(self, chunk_id: str, **fields: Unpack[ChunkUpdate]) -> None:
        names = ", ".join(f"{name} = ?" for name in fields)
        self._db.execute(f"UPDATE chunks SET {names} WHERE id = ?", (*fields.values(), chunk_id))

    def current_round(self) -> int:
        row = self._db.execute("SELECT COALESCE(MAX(round), 0) FROM chunks").fetchone()
        return int(row[0])

    # ----------------------------------------------------------- outcomes

    def record_outcomes(self, chunk_id: str, outcomes: Iterable[tuple[Outcome, bytes]]) -> None:
        """Store outcomes of lines that this chunk carries (late or foreign lines are ignored)."""
        rows = (
            (
                o.status,
                o.reason,
                None if o.answer is None else orjson.dumps(o.answer),
                raw,
                o.input_tokens,
                o.output_tokens,
                o.cached_tokens,
                o.custom_id,
                chunk_id,
            )
            for o, raw in outcomes
        )
        self._db.executemany(
            "UPDATE requests SET status = ?, reason = ?, answer = ?, result = ?, "
            "input_tokens = ?, output_tokens = ?, cached_tokens = ? "
            "WHERE custom_id = ? AND chunk = ?",
            rows,
        )

    def fail_unanswered(self, chunk_id: str, reason: str) -> int:
        """Lines of a finished chunk that came back in neither file."""
        cur = self._db.execute(
            "UPDATE requests SET status = ?, reason = ? WHERE chunk = ? AND status = ?",
            (LineStatus.FAILED, reason, chunk_id, LineStatus.PENDING),
        )
        return cur.rowcount

    def finish_chunk(
        self, chunk_id: str, outcomes: Iterable[tuple[Outcome, bytes]], reason: str
    ) -> None:
        """Record a chunk's outcomes and mark it done, atomically."""
        with self._tx():
            self.record_outcomes(chunk_id, outcomes)
            self.fail_unanswered(chunk_id, reason)
            self.update_chunk(chunk_id, state=ChunkState.DONE)

    def retryable(self, statuses: tuple[Answered, ...]) -> Iterator[RequestEntry]:
        marks = ",".join("?" for _ in statuses)
        cur = self._db.execute(
            "SELECT custom_id, seq, src_chunk, src_offset, src_length FROM requests "
            f"WHERE status IN ({marks}) ORDER BY seq",
            statuses,
        )
        for row in cur:
            yield RequestEntry(*row)

    def start_round(
        self, round_: int, chunks: list[tuple[str, Path, int, int]], members: dict[str, str]
    ) -> None:
        """Add a retry round's chunks and move its lines onto them, atomically."""
        with self._tx():
            for seq, (chunk_id, path, n, size) in enumerate(chunks):
                self.add_chunk(chunk_id, round_, seq, path, n, size)
            self._db.executemany(
                "UPDATE requests SET chunk = ?, round = ?, status = ? WHERE custom_id = ?",
                (
                    (chunk_id, round_, LineStatus.PENDING, custom_id)
                    for custom_id, chunk_id in members.items()
                ),
            )

    def outcome(self, custom_id: str) -> StoredOutcome | None:
        row = self._db.execute(
            "SELECT status, reason, answer, result FROM requests WHERE custom_id = ?",
            (custom_id,),
        ).fetchone()
        if row is None:
            return None
        answer = None if row[2] is None else orjson.loads(row[2])
        result = None if row[3] is None else orjson.loads(row[3])
        return StoredOutcome(LineStatus(row[0]), row[1], answer, result)

    def failures(
        self, limit: int, *, include_length: bool = True
    ) -> list[tuple[str, LineStatus, str | None]]:
        """The first lines without an answer (``include_length``: cut-off answers too)."""
        kept = (LineStatus.OK,) if include_length else (LineStatus.OK, LineStatus.LENGTH)
        marks = ",".join("?" for _ in kept)
        return [
            (str(r[0]), LineStatus(r[1]), r[2])
            for r in self._db.execute(
                "SELECT custom_id, status, reason FROM requests "
                f"WHERE status NOT IN ({marks}) ORDER BY seq LIMIT ?",
                (*kept, limit),
            )
        ]

    def totals(self) -> Totals:
        row = self._db.execute(
            "SELECT COUNT(*), "
            "COALESCE(SUM(status = ?), 0), COALESCE(SUM(status = ?), 0), "
            "COALESCE(SUM(status = ?), 0), COALESCE(SUM(status = ?), 0), "
            "COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0), "
            "COALESCE(SUM(cached_tokens), 0) FROM requests",
            (LineStatus.OK, LineStatus.FAILED, LineStatus.LENGTH, LineStatus.PENDING),
        ).fetchone()
        return Totals(*(int(x) for x in row))

    # -------------------------------------------------------------- misc

    def _tx(self) -> _Transaction:
        return _Transaction(self._db)


def _chunk_row(row: tuple[Any, ...]) -> ChunkRow:
    values = list(row)
    values[6] = ChunkState(values[6])  # the state column
    return ChunkRow(*values)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")


def now() -> float:
    return time.time()
