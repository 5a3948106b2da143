"""Open the SQLite job store so that a damaged or emptied file stops the server instead of losing jobs.

SQLite opens a 0-byte or missing file as a new, empty database without a word, and a damaged one
only fails when a damaged page is read. So, at start: a marker file next to the database records
that a store was created there; a missing, empty or table-less database with a marker is refused,
and so is one that fails `pragma quick_check`. Each refusal names the file and what to do. The
database runs in WAL mode with `synchronous=full` (a committed job survives power loss) and
incremental auto-vacuum (space of expired jobs is given back to the file system).
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from app.core.errors import AppError

log = logging.getLogger(__name__)


class JobStoreDamaged(AppError):
    """The job store cannot be trusted; the server must not start on it."""

    code = "job_store_damaged"
    http_status = 503


def marker_path(path: Path) -> Path:
    return path.with_name(path.name + ".marker")


def open_job_database(path: Path, schema: str) -> sqlite3.Connection:
    """A connection to the checked store at `path`, with `schema` applied; `JobStoreDamaged` if it is not sound."""
    path.parent.mkdir(parents=True, exist_ok=True)
    marker = marker_path(path)
    had_jobs = marker.exists()
    has_data = path.exists() and path.stat().st_size > 0
    if had_jobs and not has_data:
        raise JobStoreDamaged(
            f"The job store {path} is {'empty' if path.exists() else 'missing'}, but {marker} says jobs were "
            f"stored there. Restore the file from a backup, or delete {marker} to start with no jobs."
        )
    conn = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
    try:
        _check_and_configure(conn, path, marker, had_jobs, has_data)
        conn.executescript(schema)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise _damaged(path, marker, f"{type(exc).__name__}: {exc}") from None
    except BaseException:
        conn.close()
        raise
    marker.touch()
    return conn


def _check_and_configure(conn: sqlite3.Connection, path: Path, marker: Path, had_jobs: bool, has_data: bool) -> None:
    if has_data:
        problems = [str(row[0]) for row in conn.execute("pragma quick_check(5)").fetchall()]
        if problems != ["ok"]:
            raise _damaged(path, marker, "; ".join(problems)[:300])
        tables = {row[0] for row in conn.execute("select name from sqlite_master where type = 'table'")}
        if had_jobs and "jobs" not in tables:
            raise JobStoreDamaged(
                f"The job store {path} has no jobs table, but {marker} says jobs were stored there. Restore the "
                f"file from a backup, or move it aside and delete {marker} to start with no jobs."
            )
    if conn.execute("pragma auto_vacuum").fetchone()[0] != 2:
        # Takes effect on an empty database at once; an existing one is rebuilt by VACUUM (once).
        conn.execute("pragma auto_vacuum=incremental")
        if has_data:
            log.info("job store %s: enabling incremental auto-vacuum (one-time VACUUM)", path)
            conn.execute("vacuum")
    conn.execute("pragma journal_mode=wal")
    conn.execute("pragma synchronous=full")
    conn.execute("pragma foreign_keys=on")


def _damaged(path: Path, marker: Path, detail: str) -> JobStoreDamaged:
    return JobStoreDamaged(
        f"The job store {path} is damaged ({detail}). Stop every process that uses it, then restore it from a "
        f"backup or salvage it with `sqlite3 {path} .recover | sqlite3 recovered.sqlite3`; to start with no "
        f"jobs instead, move {path} aside and delete {marker}."
    )
