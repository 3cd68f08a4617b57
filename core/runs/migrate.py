"""Copy one run store into another (a workspace's SQLite file into PostgreSQL), losing nothing.

Idempotent, run by run: each run's row and its missing metric rows are copied in one
transaction, so an interrupted copy resumes where it stopped and a second copy adds only
what is new. A run already in the target is overwritten only when the source saw it later
(it went on in the source after an earlier copy). Metric ids are not kept: the target hands
out its own (it may hold rows already), in the source's order, so every run's curves read
back in the same order.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from core.errors import ConfigError
from core.progress import ProgressFn, no_progress
from core.runs import db
from core.runs.store import RunStore

METRIC_FIELDS = ("epoch", "step", "split", "name", "value", "time")


def _last_seen(row: dict[str, Any]) -> float:
    return max(float(row.get(k) or 0.0) for k in ("created", "started", "finished", "heartbeat"))


def _copy_run(src: RunStore, dst: RunStore, row: dict[str, Any]) -> tuple[int, int]:
    """(runs copied 0/1, metric rows copied) for one run."""
    source_metrics = src._conn().execute(
        f"SELECT {', '.join(METRIC_FIELDS)} FROM metrics WHERE run_id = ? ORDER BY id", (row["id"],)
    )
    conn = dst._conn()
    columns = list(row)
    with conn.write():
        have = conn.execute("SELECT * FROM runs WHERE id = ?", (row["id"],))
        copied_run = 0
        if not have:
            conn.execute(
                f"INSERT INTO runs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                [row[c] for c in columns],
            )
            copied_run = 1
        elif _last_seen(row) > _last_seen(have[0]):
            sets = ", ".join(f"{c} = ?" for c in columns if c != "id")
            conn.execute(
                f"UPDATE runs SET {sets} WHERE id = ?", [*(row[c] for c in columns if c != "id"), row["id"]]
            )
            copied_run = 1
        # A multiset of what the target holds: a row is copied unless an identical one is there.
        present = Counter(
            tuple(r[f] for f in METRIC_FIELDS)
            for r in conn.execute(
                f"SELECT {', '.join(METRIC_FIELDS)} FROM metrics WHERE run_id = ?", (row["id"],)
            )
        )
        missing = []
        for r in source_metrics:
            key = tuple(r[f] for f in METRIC_FIELDS)
            if present[key] > 0:
                present[key] -= 1
            else:
                missing.append((row["id"], *key))
        if missing:
            conn.executemany(
                f"INSERT INTO metrics (run_id, {', '.join(METRIC_FIELDS)}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                missing,
            )
    return copied_run, len(missing)


def migrate_store(
    target_url: str,
    source_url: str | None = None,
    workspace: str | os.PathLike[str] | None = None,
    progress: ProgressFn = no_progress,
) -> dict[str, int]:
    """Copy every run and metric row of ``source_url`` (default: the workspace's SQLite
    file, whatever ``$CHESTLAB_STORE_URL`` says) into ``target_url``; returns
    ``{"runs": copied or updated, "metrics": rows copied}``."""
    from core.workspace import workspace_root

    if source_url is None:
        path = workspace_root(workspace) / db.DB_FILENAME
        if not path.exists():
            # Nothing recorded yet: the target still gets its schema, so switching to it works.
            RunStore(url=target_url).close()
            return {"runs": 0, "metrics": 0}
        source_url = f"sqlite:///{path}"
    if source_url.strip() == target_url.strip():
        raise ConfigError(f"store migrate: source and target are the same store ({db.redact(target_url)})")
    src, dst = RunStore(url=source_url), RunStore(url=target_url)
    try:
        rows = src._conn().execute("SELECT * FROM runs ORDER BY created, id")
        runs = metrics = 0
        for i, row in enumerate(rows):
            r, m = _copy_run(src, dst, row)
            runs, metrics = runs + r, metrics + m
            progress(i + 1, len(rows), row["id"])
    finally:
        src.close()
        dst.close()
    return {"runs": runs, "metrics": metrics}
