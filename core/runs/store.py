"""The run store: runs and their metric rows, in the workspace's SQLite file or a PostgreSQL
server reached by URL (``$CHESTLAB_STORE_URL``), with the same SQL on both.

Writers are the training processes (metrics, progress, result), the worker (claims, pids,
deaths) and the app (submit, cancel, resume, delete). Every change is one short statement
or one short ``write()`` transaction, so several processes write at once without losing a
row. Configs are stored as JSON and never validated here: the store must not depend on the
registries that ``RunConfig`` checks.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from core.errors import ConfigError, NotFoundError
from core.runs import db
from core.train.reporter import MetricRow

if TYPE_CHECKING:
    import pandas as pd


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (RunStatus.DONE, RunStatus.FAILED, RunStatus.CANCELLED)


# Each entry migrates the schema from version i to i + 1; never edit a released entry.
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE IF NOT EXISTS runs (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL,
            config_json TEXT NOT NULL,
            requested_device TEXT NOT NULL DEFAULT 'auto',
            created {float} NOT NULL,
            started {float},
            finished {float},
            pid INTEGER,
            host TEXT,
            device TEXT,
            progress {float} NOT NULL DEFAULT 0,
            epoch INTEGER NOT NULL DEFAULT 0,
            step INTEGER NOT NULL DEFAULT 0,
            message TEXT NOT NULL DEFAULT '',
            heartbeat {float},
            error TEXT NOT NULL DEFAULT '',
            tags_json TEXT NOT NULL DEFAULT '[]',
            info_json TEXT NOT NULL DEFAULT '{{}}',
            best_json TEXT NOT NULL DEFAULT '{{}}',
            test_json TEXT NOT NULL DEFAULT '{{}}',
            cancel_requested INTEGER NOT NULL DEFAULT 0,
            launcher TEXT,
            launcher_ref TEXT,
            attempt INTEGER NOT NULL DEFAULT 1,
            resume INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX IF NOT EXISTS runs_status_created ON runs (status, created)",
        """CREATE TABLE IF NOT EXISTS metrics (
            id {serial_pk},
            run_id TEXT NOT NULL,
            epoch INTEGER NOT NULL,
            step INTEGER NOT NULL,
            split TEXT NOT NULL,
            name TEXT NOT NULL,
            value {float},
            time {float} NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS metrics_run_id ON metrics (run_id, id)",
    ],
]

HOLD_PREFIX = "submitting:"  # launcher_ref of a run taken by a worker that is submitting it
METRIC_COLUMNS = ["id", "run_id", "epoch", "step", "split", "name", "value", "time"]
LIVE = (RunStatus.QUEUED, RunStatus.RUNNING)


@dataclass
class RunRecord:
    id: str
    name: str
    status: RunStatus
    config: dict[str, Any]
    requested_device: str = "auto"
    created: float = 0.0
    started: float | None = None
    finished: float | None = None
    pid: int | None = None
    host: str | None = None
    device: str | None = None
    progress: float = 0.0
    epoch: int = 0
    step: int = 0
    message: str = ""
    heartbeat: float | None = None
    error: str = ""
    tags: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    best: dict[str, Any] = field(default_factory=dict)
    test: dict[str, Any] = field(default_factory=dict)
    cancel_requested: bool = False
    launcher: str | None = None
    launcher_ref: str | None = None
    attempt: int = 1
    resume: bool = False

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> RunRecord:
        return cls(
            id=row["id"],
            name=row["name"],
            status=RunStatus(row["status"]),
            config=json.loads(row["config_json"]),
            requested_device=row["requested_device"],
            created=row["created"],
            started=row["started"],
            finished=row["finished"],
            pid=row["pid"],
            host=row["host"],
            device=row["device"],
            progress=float(row["progress"] or 0.0),
            epoch=int(row["epoch"] or 0),
            step=int(row["step"] or 0),
            message=row["message"] or "",
            heartbeat=row["heartbeat"],
            error=row["error"] or "",
            tags=json.loads(row["tags_json"]),
            info=json.loads(row["info_json"]),
            best=json.loads(row["best_json"]),
            test=json.loads(row["test_json"]),
            cancel_requested=bool(row["cancel_requested"]),
            launcher=row["launcher"],
            launcher_ref=row["launcher_ref"],
            attempt=int(row["attempt"]),
            resume=bool(row["resume"]),
        )

    def summary(self) -> dict[str, Any]:
        """The CLI's ``runs --json`` entry."""
        return {
            "run_id": self.id,
            "name": self.name,
            "status": self.status.value,
            "progress": round(self.progress, 4),
            "pid": self.pid,
            "device": self.device,
            "host": self.host,
            "launcher": self.launcher or "local",
            "error": self.error,
            "best": self.best,
        }


def new_run_id(now: float | None = None) -> str:
    """Short, readable and sortable by creation time (UTC): ``20261122-154233-a1b2``."""
    stamp = datetime.fromtimestamp(now if now is not None else time.time(), tz=UTC)
    return f"{stamp:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def _json(obj: Any) -> str:
    from core.fileio import to_jsonable

    return json.dumps(to_jsonable(obj))


def _config_dict(config: Any) -> dict[str, Any]:
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    if not isinstance(config, Mapping):
        raise ConfigError(f"a run config is a JSON object, got {type(config).__name__}")
    return json.loads(_json(dict(config)))


def _default_name(config: Mapping[str, Any], run_id: str) -> str:
    if config.get("name"):
        return str(config["name"])
    if config.get("arch"):
        sampler = config.get("sampler", "none")
        return f"{config['arch']}-{config.get('loss', '')}" + (f"-{sampler}" if sampler != "none" else "")
    return run_id


class RunStore:
    """Runs and metrics at ``url`` (default ``$CHESTLAB_STORE_URL`` or the workspace's
    ``chestlab.db``). Safe to use from several threads and processes: each thread of each
    process gets its own connection."""

    def __init__(self, url: str | None = None, workspace: str | os.PathLike[str] | None = None) -> None:
        self.url = url or db.default_url(workspace)
        self._local = threading.local()
        self._migrate()

    @property
    def where(self) -> str:
        """The database file, or the server URL without its password."""
        path = db.sqlite_path(self.url)
        return str(path) if path is not None else db.redact(self.url)

    def _not_found(self, run_id: str) -> str:
        return f"run {run_id!r} not found in {self.where}; list runs with `python -m core runs`"

    # -- connections ---------------------------------------------------------------------

    def _conn(self) -> db.Connection:
        # A connection must not cross a fork or a thread; re-open in a new process.
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid() or conn.broken:
            conn = db.connect(self.url)
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            conn.close()
        self._local.conn = None

    def _migrate(self) -> None:
        conn = self._conn()
        # Created inside the write lock: two processes creating the same table at once
        # collide on PostgreSQL even with IF NOT EXISTS.
        if not conn.table_exists("schema_version"):
            with conn.write():
                conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        version = self._schema_version(conn)
        if version == len(MIGRATIONS):
            return  # the common case: no write lock taken
        if version > len(MIGRATIONS):
            raise ConfigError(
                f"run store {self.where} has schema version {version}, newer than this ChestLab "
                f"understands ({len(MIGRATIONS)}); update ChestLab"
            )
        with conn.write():
            version = self._schema_version(conn)
            for i, statements in enumerate(MIGRATIONS[version:], start=version + 1):
                for sql in statements:
                    conn.execute(conn.ddl(sql))
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (i,))

    @staticmethod
    def _schema_version(conn: db.Connection) -> int:
        return int(conn.execute("SELECT MAX(version) AS v FROM schema_version")[0]["v"] or 0)

    def _one(self, sql: str, params: Sequence[Any]) -> RunRecord | None:
        rows = self._conn().execute(sql, params)
        return RunRecord.from_row(rows[0]) if rows else None

    # -- runs ----------------------------------------------------------------------------

    def create_run(self, config: Any, name: str = "", tags: Iterable[str] = ()) -> RunRecord:
        cfg = _config_dict(config)
        tags = list(tags) or [str(t) for t in cfg.get("tags", [])]
        for _ in range(5):
            now = time.time()
            run_id = new_run_id(now)
            rows = self._conn().execute(
                "INSERT INTO runs (id, name, status, config_json, requested_device, created, tags_json) "
                "SELECT ?, ?, ?, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM runs WHERE id = ?) RETURNING *",
                (
                    run_id,
                    name or _default_name(cfg, run_id),
                    RunStatus.QUEUED.value,
                    _json(cfg),
                    str(cfg.get("device", "auto")),
                    now,
                    _json(tags),
                    run_id,
                ),
            )
            if rows:
                return RunRecord.from_row(rows[0])
        raise RuntimeError("could not find a free run id after 5 tries")

    def get_run(self, run_id: str) -> RunRecord:
        rec = self._one("SELECT * FROM runs WHERE id = ?", (run_id,))
        if rec is None:
            raise NotFoundError(self._not_found(run_id))
        return rec

    def list_runs(
        self, statuses: Iterable[RunStatus | str] | None = None, oldest_first: bool = False
    ) -> list[RunRecord]:
        order = "ASC" if oldest_first else "DESC"
        sql, params = "SELECT * FROM runs", []
        if statuses is not None:
            params = [RunStatus(s).value for s in statuses]
            if not params:
                return []
            sql += f" WHERE status IN ({', '.join('?' * len(params))})"
        rows = self._conn().execute(f"{sql} ORDER BY created {order}, id {order}", params)
        return [RunRecord.from_row(r) for r in rows]

    def claim_next(
        self, host: str, requested_devices: Sequence[str] | None = None, queue_in: str | None = None
    ) -> RunRecord | None:
        """Atomically take the oldest queued run (whose config asks for one of
        ``requested_devices``, if given) and mark it running on ``host``. With ``queue_in``
        (a launcher that queues runs itself, e.g. ``ray``) the run is taken but stays queued,
        held by a placeholder ``launcher_ref`` until ``mark_submitted`` records its job. A
        run with a ``launcher_ref`` (held, or waiting in a cluster's queue) is not claimable."""
        where, params = "", []
        if requested_devices is not None:
            if not requested_devices:
                return None
            params = list(requested_devices)
            where = f" AND requested_device IN ({', '.join('?' * len(params))})"
        now = time.time()
        conn = self._conn()
        with conn.write():
            # The outer status test keeps the claim atomic on servers that re-check a row
            # after waiting for its lock (PostgreSQL's READ COMMITTED).
            rows = conn.execute(
                "UPDATE runs SET status = ?, host = ?, started = ?, heartbeat = ?, finished = NULL, pid = NULL, "
                "device = NULL, launcher = ?, launcher_ref = ?, error = '', message = ? "
                "WHERE id = (SELECT id FROM runs WHERE status = ? AND launcher_ref IS NULL"
                f"{where} ORDER BY created, id LIMIT 1) AND status = ? AND launcher_ref IS NULL RETURNING *",
                [
                    RunStatus.QUEUED.value if queue_in else RunStatus.RUNNING.value,
                    host,
                    None if queue_in else now,
                    now,
                    queue_in,
                    f"{HOLD_PREFIX}{host}:{os.getpid()}" if queue_in else None,
                    f"submitting to {queue_in}" if queue_in else "starting",
                    RunStatus.QUEUED.value,
                    *params,
                    RunStatus.QUEUED.value,
                ],
            )
        return RunRecord.from_row(rows[0]) if rows else None

    def claim_run(self, run_id: str, host: str) -> RunRecord:
        """Atomically mark one queued run running on ``host`` (a foreground ``train``)."""
        now = time.time()
        rows = self._conn().execute(
            "UPDATE runs SET status = ?, host = ?, started = ?, heartbeat = ?, finished = NULL, error = '', "
            "message = 'starting' WHERE id = ? AND status = ? RETURNING *",
            (RunStatus.RUNNING.value, host, now, now, run_id, RunStatus.QUEUED.value),
        )
        if not rows:
            status = self.get_run(run_id).status.value
            raise ConfigError(f"run {run_id} is {status}; only a queued run can be started")
        return RunRecord.from_row(rows[0])

    def mark_started(
        self, run_id: str, pid: int | None, host: str, device: str, launcher: str, launcher_ref: str
    ) -> None:
        now = time.time()
        self._conn().execute(
            "UPDATE runs SET pid = ?, host = ?, device = ?, launcher = ?, launcher_ref = ?, heartbeat = ?, "
            "started = COALESCE(started, ?) WHERE id = ?",
            (pid, host, device, launcher, launcher_ref, now, now, run_id),
        )

    def mark_submitted(self, run_id: str, hold: str, device: str, launcher_ref: str, message: str) -> None:
        """A held run (``claim_next(queue_in=...)``) whose job was submitted: it waits in the
        launcher's queue, still ``queued``, until ``mark_running``. A trainer that started
        first has already recorded the same reference; then nothing changes."""
        now = time.time()
        self._conn().execute(
            "UPDATE runs SET launcher_ref = ?, device = ?, message = ?, heartbeat = ? WHERE id = ? AND launcher_ref = ?",
            (launcher_ref, device, message, now, run_id, hold),
        )

    def mark_running(self, run_id: str, launcher_ref: str, message: str = "running") -> bool:
        """A submitted run whose launcher started it; returns whether the row changed."""
        now = time.time()
        rows = self._conn().execute(
            "UPDATE runs SET status = ?, message = ?, started = COALESCE(started, ?), heartbeat = ? "
            "WHERE id = ? AND status = ? AND launcher_ref = ? RETURNING id",
            (RunStatus.RUNNING.value, message, now, now, run_id, RunStatus.QUEUED.value, launcher_ref),
        )
        return bool(rows)

    def update_progress(self, run_id: str, fraction: float, epoch: int, step: int, message: str = "") -> None:
        """Progress 0..1; also the run's heartbeat."""
        self._conn().execute(
            "UPDATE runs SET progress = ?, epoch = ?, step = ?, message = ?, heartbeat = ? WHERE id = ?",
            (min(max(float(fraction), 0.0), 1.0), int(epoch), int(step), message, time.time(), run_id),
        )

    def set_info(self, run_id: str, **info: Any) -> dict[str, Any]:
        """Merge ``info`` into the run's info JSON; returns the merged dict."""
        conn = self._conn()
        with conn.write():
            rows = conn.execute("SELECT info_json FROM runs WHERE id = ?", (run_id,))
            if not rows:
                raise NotFoundError(self._not_found(run_id))
            merged = {**json.loads(rows[0]["info_json"]), **json.loads(_json(info))}
            conn.execute("UPDATE runs SET info_json = ? WHERE id = ?", (_json(merged), run_id))
        return merged

    def finish(
        self,
        run_id: str,
        status: RunStatus | str,
        best: Mapping[str, Any] | None = None,
        test: Mapping[str, Any] | None = None,
        error: str = "",
        only_if: Iterable[RunStatus | str] | None = None,
    ) -> bool:
        """Record the final status and results. With ``only_if``, only a run currently in
        one of those statuses changes (the worker uses it so it never overwrites a result
        the training process reported). Returns whether the row changed."""
        status = RunStatus(status)
        if not status.finished:
            raise ValueError(f"finish() takes done, failed or cancelled, got {status.value!r}")
        sets = "status = ?, finished = ?, error = ?, cancel_requested = 0"
        params: list[Any] = [status.value, time.time(), error]
        if best is not None:
            sets += ", best_json = ?"
            params.append(_json(dict(best)))
        if test is not None:
            sets += ", test_json = ?"
            params.append(_json(dict(test)))
        if status is RunStatus.DONE:
            sets += ", progress = 1"
        where, params = "id = ?", [*params, run_id]
        if only_if is not None:
            allowed = [RunStatus(s).value for s in only_if]
            where += f" AND status IN ({', '.join('?' * len(allowed))})"
            params += allowed
        return bool(self._conn().execute(f"UPDATE runs SET {sets} WHERE {where} RETURNING id", params))

    def request_cancel(self, run_id: str) -> RunRecord:
        """A queued run is cancelled at once (it never starts); a running one is flagged
        and stops itself (the worker kills it if it does not). Cancelling a cancelled run
        is a no-op; a done or failed run cannot be cancelled. A queued run already submitted
        to a cluster is flagged too: should its job start before the worker stops it, the
        trainer stops at its first look."""
        conn = self._conn()
        with conn.write():
            rec = self._one("SELECT * FROM runs WHERE id = ?", (run_id,))
            if rec is None:
                raise NotFoundError(self._not_found(run_id))
            if rec.status is RunStatus.QUEUED:
                conn.execute(
                    "UPDATE runs SET status = ?, finished = ?, message = ?, cancel_requested = ? WHERE id = ?",
                    (
                        RunStatus.CANCELLED.value,
                        time.time(),
                        "cancelled before it started",
                        int(bool(rec.launcher_ref)),
                        run_id,
                    ),
                )
            elif rec.status is RunStatus.RUNNING:
                conn.execute("UPDATE runs SET cancel_requested = 1 WHERE id = ?", (run_id,))
            elif rec.status is not RunStatus.CANCELLED:
                raise ConfigError(
                    f"run {run_id} is {rec.status.value}; only queued or running runs can be cancelled"
                )
        return self.get_run(run_id)

    def requeue_for_resume(self, run_id: str) -> RunRecord:
        """Queue a failed or cancelled run again; its training process resumes from the
        last checkpoint (``resume`` is set)."""
        rows = self._conn().execute(
            "UPDATE runs SET status = ?, resume = 1, attempt = attempt + 1, cancel_requested = 0, error = '', "
            "message = 'queued to resume', finished = NULL, pid = NULL, launcher_ref = NULL, heartbeat = NULL "
            "WHERE id = ? AND status IN (?, ?) RETURNING id",
            (RunStatus.QUEUED.value, run_id, RunStatus.FAILED.value, RunStatus.CANCELLED.value),
        )
        if not rows:
            status = self.get_run(run_id).status.value
            raise ConfigError(f"run {run_id} is {status}; only failed or cancelled runs can be resumed")
        return self.get_run(run_id)

    def delete_run(self, run_id: str) -> None:
        """Delete a run that is not running, and its metrics."""
        conn = self._conn()
        with conn.write():
            rows = conn.execute("SELECT status FROM runs WHERE id = ?", (run_id,))
            if not rows:
                raise NotFoundError(self._not_found(run_id))
            if rows[0]["status"] == RunStatus.RUNNING.value:
                raise ConfigError(
                    f"run {run_id} is running; cancel it first (`python -m core cancel {run_id}`)"
                )
            conn.execute("DELETE FROM metrics WHERE run_id = ?", (run_id,))
            conn.execute("DELETE FROM runs WHERE id = ?", (run_id,))

    def cancel_requested(self, run_id: str) -> bool:
        """Whether a cancel was asked for (a deleted run counts as cancelled)."""
        rows = self._conn().execute("SELECT cancel_requested FROM runs WHERE id = ?", (run_id,))
        return not rows or bool(rows[0]["cancel_requested"])

    def stale_running(self, max_age_s: float) -> list[RunRecord]:
        """Running runs whose heartbeat is older than ``max_age_s`` seconds."""
        rows = self._conn().execute(
            "SELECT * FROM runs WHERE status = ? AND (heartbeat IS NULL OR heartbeat < ?) ORDER BY created",
            (RunStatus.RUNNING.value, time.time() - max_age_s),
        )
        return [RunRecord.from_row(r) for r in rows]

    # -- metrics -------------------------------------------------------------------------

    def add_metrics(self, run_id: str, rows: Iterable[MetricRow]) -> int:
        """Append metric rows in one transaction; returns how many."""
        values = [
            (run_id, int(r.epoch), int(r.step), r.split, r.name, _float(r.value), float(r.time)) for r in rows
        ]
        if not values:
            return 0
        conn = self._conn()
        with conn.write():
            conn.executemany(
                "INSERT INTO metrics (run_id, epoch, step, split, name, value, time) VALUES (?, ?, ?, ?, ?, ?, ?)",
                values,
            )
        return len(values)

    def metrics(
        self, run_ids: Sequence[str] | str, names: Sequence[str] | None = None, after_id: int = 0
    ) -> tuple[pd.DataFrame, int]:
        """Metric rows of ``run_ids`` with ``id > after_id`` (ordered by id), and the last id
        read: pass it back as ``after_id`` to fetch only what was written since (live curves).
        """
        # Metric rows are written in write() transactions, which run one at a time on both
        # dialects (SQLite's write lock, PostgreSQL's advisory lock), so ids become visible
        # in order and ``after_id`` never skips a row.
        import pandas as pd

        ids = [run_ids] if isinstance(run_ids, str) else list(run_ids)
        if not ids:
            return _empty_metrics(), after_id
        sql = f"SELECT {', '.join(METRIC_COLUMNS)} FROM metrics WHERE run_id IN ({', '.join('?' * len(ids))}) AND id > ?"
        params: list[Any] = [*ids, int(after_id)]
        if names:
            sql += f" AND name IN ({', '.join('?' * len(names))})"
            params += list(names)
        rows = self._conn().execute(sql + " ORDER BY id", params)
        if not rows:
            return _empty_metrics(), after_id
        df = pd.DataFrame(rows, columns=METRIC_COLUMNS)
        df = df.astype(
            {"id": "int64", "epoch": "int64", "step": "int64", "value": "float64", "time": "float64"}
        )
        return df, int(df["id"].iloc[-1])

    def count_metrics(self, run_id: str) -> int:
        return int(
            self._conn().execute("SELECT COUNT(*) AS n FROM metrics WHERE run_id = ?", (run_id,))[0]["n"]
        )


def _float(value: Any) -> float | None:
    v = float(value)
    return v if v == v else None  # NaN is stored as NULL (JSON and SQL have no NaN)


def _empty_metrics() -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(
        {
            "id": pd.Series(dtype="int64"),
            "run_id": pd.Series(dtype="str"),
            "epoch": pd.Series(dtype="int64"),
            "step": pd.Series(dtype="int64"),
            "split": pd.Series(dtype="str"),
            "name": pd.Series(dtype="str"),
            "value": pd.Series(dtype="float64"),
            "time": pd.Series(dtype="float64"),
        }
    )


class StoreReporter:
    """The training loop's ``Reporter`` for the run store. Progress writes are throttled
    (the loop may report every step); ``should_stop`` reads the store at most once a second."""

    def __init__(
        self, store: RunStore, run_id: str, progress_interval_s: float = 0.5, stop_interval_s: float = 1.0
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.progress_interval_s = progress_interval_s
        self.stop_interval_s = stop_interval_s
        self._last_progress = 0.0
        self._last_stop_check = 0.0
        self._stop = False

    def log_metrics(self, rows: list[MetricRow]) -> None:
        self.store.add_metrics(self.run_id, rows)

    def progress(self, fraction: float, epoch: int, step: int, message: str = "") -> None:
        now = time.monotonic()
        if fraction < 1.0 and now - self._last_progress < self.progress_interval_s:
            return
        self._last_progress = now
        self.store.update_progress(self.run_id, fraction, epoch, step, message)

    def set_info(self, **info: Any) -> None:
        self.store.set_info(self.run_id, **info)

    def should_stop(self) -> bool:
        now = time.monotonic()
        if not self._stop and now - self._last_stop_check >= self.stop_interval_s:
            self._last_stop_check = now
            self._stop = self.store.cancel_requested(self.run_id)
        return self._stop

    def finish(self, status: str, best: dict[str, float], test: dict[str, Any], error: str = "") -> None:
        self.store.finish(self.run_id, status, best, test, error)
