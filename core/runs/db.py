"""The one place that opens run-store connections.

Everything else writes portable SQL with ``?`` placeholders and calls ``Connection.execute``;
the dialect-specific parts (connection options, how a write transaction starts, column
types in DDL, the placeholder style) live here. Two dialects: SQLite (a file path or
``sqlite:///PATH``, the default) and PostgreSQL (``postgresql://USER:PASSWORD@HOST:PORT/DB``,
through psycopg 3), so runs on other machines can report to one server database.
"""

from __future__ import annotations

import os
import re
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
CONNECT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Dialect:
    name: str
    begin_write: tuple[str, ...]  # starts a transaction that already holds the write lock
    paramstyle: str  # "qmark" or "format"
    types: dict[str, str]  # DDL placeholders -> column types
    table_exists: str  # one ``?`` (the table name); returns a row when the table exists


# Any fixed number: every ChestLab store in a database shares the one write lock.
_PG_WRITE_LOCK_KEY = 0x43484C42  # "CHLB"


_DIALECTS = {
    "sqlite": Dialect(
        name="sqlite",
        # IMMEDIATE takes the write lock up front: a deferred transaction that upgrades to a
        # write gets SQLITE_BUSY at once (no busy wait), which loses claims under contention.
        begin_write=("BEGIN IMMEDIATE",),
        paramstyle="qmark",
        types={"serial_pk": "INTEGER PRIMARY KEY AUTOINCREMENT", "float": "REAL"},
        table_exists="SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?",
    ),
    "postgresql": Dialect(
        name="postgresql",
        # A transaction-scoped advisory lock gives write() SQLite's semantics: write
        # transactions run one at a time. That keeps the read-then-write blocks (cancel,
        # delete, migrations) race-free under READ COMMITTED, and makes metric ids become
        # visible in id order (a sequence hands out ids before commit; serialised, the
        # later id commits later), so ``metrics(after_id=...)`` never skips a row.
        begin_write=("BEGIN", f"SELECT pg_advisory_xact_lock({_PG_WRITE_LOCK_KEY})"),
        paramstyle="format",
        types={"serial_pk": "BIGSERIAL PRIMARY KEY", "float": "DOUBLE PRECISION"},
        table_exists="SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relname = ? AND n.nspname = current_schema() AND c.relkind = 'r'",
    ),
}
PG_SCHEMES = ("postgresql://", "postgres://")


def default_url(workspace: str | os.PathLike[str] | None = None) -> str:
    """``$CHESTLAB_STORE_URL``, else the workspace's SQLite file."""
    from core.workspace import workspace_root

    env = os.environ.get(URL_ENV_VAR, "").strip()
    if env:
        return env
    return f"sqlite:///{workspace_root(workspace) / DB_FILENAME}"


def is_server_url(url: str) -> bool:
    return url.startswith(PG_SCHEMES)


def redact(url: str) -> str:
    """The URL without its password (for messages and logs)."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


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
        for sql in self.dialect.begin_write:
            self.raw.execute(sql)
        try:
            yield self
        except BaseException:
            self.raw.execute("ROLLBACK")
            raise
        self.raw.execute("COMMIT")

    @property
    def broken(self) -> bool:
        """A server connection that was lost (server restart, network): open a new one."""
        return bool(getattr(self.raw, "broken", False) or getattr(self.raw, "closed", False) is True)

    def ddl(self, sql: str) -> str:
        return sql.format(**self.dialect.types)

    def table_exists(self, name: str) -> bool:
        return bool(self.execute(self.dialect.table_exists, (name,)))

    def close(self) -> None:
        self.raw.close()


def connect(url: str) -> Connection:
    """Open one connection to the store at ``url``: a path, ``sqlite:///PATH`` or
    ``postgresql://USER:PASSWORD@HOST:PORT/DB``."""
    if is_server_url(url):
        return _connect_postgresql(url)
    path = sqlite_path(url)
    if path is None:
        scheme = url.split("://", 1)[0]
        raise ConfigError(
            f"store URL {redact(url)!r}: scheme {scheme!r} is not supported; use a file path, sqlite:///PATH "
            f"or postgresql://USER:PASSWORD@HOST:PORT/DB (set ${URL_ENV_VAR} or leave it empty for the "
            f"workspace's {DB_FILENAME})"
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


def _connect_postgresql(url: str) -> Connection:
    try:
        import psycopg
    except ImportError:
        raise ConfigError(
            f"store URL {redact(url)!r} needs the PostgreSQL driver: pip install 'psycopg[binary]'"
        ) from None
    try:
        # autocommit, as for SQLite: transactions are exactly the explicit write() blocks.
        raw = psycopg.connect(
            url,
            autocommit=True,
            connect_timeout=int(CONNECT_TIMEOUT_S),
            application_name="chestlab",
        )
    except psycopg.Error as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ConfigError(f"store URL {redact(url)!r}: cannot connect ({reason})") from None
    # A lock wait longer than this is a stuck writer, not contention.
    raw.execute(f"SET lock_timeout = '{int(BUSY_TIMEOUT_S * 1000)}ms'")
    return Connection(raw, _DIALECTS["postgresql"])
