"""The one place that opens run-store connections.

Everything else writes portable SQL with ``?`` placeholders and calls ``Connection.execute``;
the dialect-specific parts (connection options, how a write transaction starts, column
types in DDL, the placeholder style) live here, so a server database (``postgresql://``,
issue 9) is an added branch in ``connect`` and ``_DIALECTS``, not a change to the store.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import ConfigError

URL_ENV_VAR = "CHESTLAB_STORE_URL"
DB_FILENAME = "chestlab.db"
BUSY_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Dialect:
    name: str
    begin_write: str  # starts a transaction that already holds the write lock
    paramstyle: str  # "qmark" or "format"
    types: dict[str, str]  # DDL placeholders -> column types


_DIALECTS = {
    "sqlite": Dialect(
        name="sqlite",
        # IMMEDIATE takes the write lock up front: a deferred transaction that upgrades to a
        # write gets SQLITE_BUSY at once (no busy wait), which loses claims under contention.
        begin_write="BEGIN IMMEDIATE",
        paramstyle="qmark",
        types={"serial_pk": "INTEGER PRIMARY KEY AUTOINCREMENT", "float": "REAL"},
    ),
}


def default_url(workspace: str | os.PathLike[str] | None = None) -> str:
    """``$CHESTLAB_STORE_URL``, else the workspace's SQLite file."""
    from core.workspace import workspace_root

    env = os.environ.get(URL_ENV_VAR, "").strip()
    if env:
        return env
    return f"sqlite:///{workspace_root(workspace) / DB_FILENAME}"


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL or plain path; None for other schemes."""
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///") :])
    if "://" in url:
        return None
    return Path(url)


def to_format_params(sql: str) -> str:
    """``?`` placeholders -> ``%s`` (psycopg's style); literal ``%`` doubled."""
    return sql.replace("%", "%%").replace("?", "%s")


class Connection:
    """A DB-API connection in autocommit mode; rows come back as dicts."""

    def __init__(self, raw: Any, dialect: Dialect) -> None:
        self.raw = raw
        self.dialect = dialect

    def _sql(self, sql: str) -> str:
        return to_format_params(sql) if self.dialect.paramstyle == "format" else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cur = self.raw.cursor()
        try:
            cur.execute(self._sql(sql), tuple(params))
            if cur.description is None:
                return []
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        finally:
            cur.close()

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        cur = self.raw.cursor()
        try:
            cur.executemany(self._sql(sql), rows)
        finally:
            cur.close()

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A short write transaction: commit on success, roll back on any error."""
        self.raw.execute(self.dialect.begin_write)
        try:
            yield self
        except BaseException:
            self.raw.execute("ROLLBACK")
            raise
        self.raw.execute("COMMIT")

    def ddl(self, sql: str) -> str:
        return sql.format(**self.dialect.types)

    def close(self) -> None:
        self.raw.close()


def connect(url: str) -> Connection:
    """Open one connection to the store at ``url`` (a path, or ``sqlite:///path``)."""
    path = sqlite_path(url)
    if path is None:
        scheme = url.split("://", 1)[0]
        raise ConfigError(
            f"store URL {url!r}: scheme {scheme!r} is not supported; use a file path or sqlite:///PATH "
            f"(set ${URL_ENV_VAR} or leave it empty for the workspace's {DB_FILENAME})"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: autocommit, so a read never leaves a transaction open and
    # transactions are exactly the explicit ``write()`` blocks.
    raw = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
    raw.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    raw.execute("PRAGMA journal_mode = WAL")
    # In WAL mode NORMAL loses no committed row on a process crash (only on power loss),
    # and it avoids an fsync per metric batch.
    raw.execute("PRAGMA synchronous = NORMAL")
    return Connection(raw, _DIALECTS["sqlite"])
