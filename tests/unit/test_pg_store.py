"""The run store on a real PostgreSQL server: the schema, choosing the store by URL, clear
connection errors, and ``store migrate`` copying a workspace's SQLite store into it without
losing a row (the store's behaviour itself is tested on both databases in test_store.py)."""

from __future__ import annotations

import json
import math
import multiprocessing

import pytest

from core.errors import ConfigError
from core.runs import db
from core.runs.migrate import migrate_store
from core.runs.store import RunStatus, RunStore
from core.train.reporter import MetricRow

pytestmark = pytest.mark.slow  # every test needs the session's PostgreSQL server

CONFIG = {"arch": "resnet18", "loss": "weighted_ce", "device": "cpu", "epochs": 3}


def _open(url: str, barrier, out) -> None:
    barrier.wait()
    try:
        RunStore(url=url).create_run(CONFIG)
        out.put("ok")
    except Exception as exc:  # reported, not raised: the parent asserts on it
        out.put(f"{type(exc).__name__}: {exc}")


def test_several_processes_create_the_schema_at_once(pg_url):
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_open, args=(pg_url, barrier, out)) for _ in range(4)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    assert results == ["ok"] * 4
    store = RunStore(url=pg_url)
    assert len(store.list_runs()) == 4
    assert store._conn().execute("SELECT version FROM schema_version") == [{"version": 1}]


def test_store_url_from_the_environment_and_password_hidden(pg_url, workspace, monkeypatch, capsys):
    from core.cli import main

    monkeypatch.setenv("CHESTLAB_STORE_URL", pg_url)
    rec = RunStore().create_run({**CONFIG, "name": "on the server"})
    assert not (workspace / "chestlab.db").exists()  # nothing went to the workspace's SQLite
    assert main(["runs", "--json"]) == 0
    assert [r["name"] for r in json.loads(capsys.readouterr().out)] == ["on the server"]
    assert RunStore(url=pg_url).get_run(rec.id).status is RunStatus.QUEUED
    secret = pg_url.replace("chestlab@", "chestlab:hunter2@")
    assert "hunter2" not in RunStore(url=secret).where and "***" in RunStore(url=secret).where


def test_an_unreachable_server_is_one_clear_error(workspace, monkeypatch, capsys):
    from core.cli import main
    from tests.conftest import free_port

    url = f"postgresql://chestlab:s3cret@127.0.0.1:{free_port()}/postgres"
    with pytest.raises(ConfigError, match=r"cannot connect") as err:
        RunStore(url=url)
    assert "s3cret" not in str(err.value) and "127.0.0.1" in str(err.value)
    monkeypatch.setenv("CHESTLAB_STORE_URL", url)
    assert main(["runs"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "cannot connect" in lines[0] and "s3cret" not in lines[0]


def _fill(store: RunStore) -> list[str]:
    """Runs in every status, with tags, info, results, NaN metrics and a resumed attempt."""
    ids = []
    for i, status in enumerate(["done", "failed", "cancelled", "running", "queued"]):
        rec = store.create_run({**CONFIG, "seed": i}, name=f"run {i}", tags=["sweep", f"s{i}"])
        ids.append(rec.id)
        rows = [MetricRow(e, e * 10, split, name, 1.0 / (e + 1)) for e in range(4) for split, name in
                (("train", "loss"), ("val", "loss"), ("val", "auc"))]  # fmt: skip
        rows.append(MetricRow(4, 40, "val", "auc", float("nan")))
        rows.append(MetricRow(0, 0, "train", "loss", 1.0))  # an exact duplicate row is still a row
        store.add_metrics(rec.id, rows)
        if status == "queued":
            continue
        store.claim_run(rec.id, "node-a")
        store.set_info(rec.id, class_weights=[1.0, 2.5], n_train=100 + i)
        store.update_progress(rec.id, 0.5, 2, 20, "epoch 2/3")
        if status != "running":
            store.finish(rec.id, status, best={"val_auc": 0.8 + i / 100}, test={"auc": 0.79}, error="")
    store.requeue_for_resume(ids[1])  # the failed one, queued again as attempt 2
    return ids


def _rows(store: RunStore, sql: str) -> list[dict]:
    return store._conn().execute(sql)


def _metric_rows(store: RunStore) -> list[tuple]:
    rows = _rows(
        store, "SELECT run_id, epoch, step, split, name, value, time FROM metrics ORDER BY run_id, id"
    )
    return [tuple("nan" if isinstance(v, float) and math.isnan(v) else v for v in r.values()) for r in rows]


def test_migrate_copies_every_run_and_metric_row_once(workspace, pg_url):
    sqlite = RunStore(workspace=workspace)
    ids = _fill(sqlite)
    n_metrics = sqlite._conn().execute("SELECT COUNT(*) AS n FROM metrics")[0]["n"]
    assert migrate_store(pg_url, workspace=workspace) == {"runs": 5, "metrics": n_metrics}
    pg = RunStore(url=pg_url)
    assert _rows(pg, "SELECT * FROM runs ORDER BY id") == _rows(sqlite, "SELECT * FROM runs ORDER BY id")
    assert _metric_rows(pg) == _metric_rows(sqlite)  # every row, in each run's order, NULLs kept
    assert [r.id for r in pg.list_runs()] == [r.id for r in sqlite.list_runs()]

    assert migrate_store(pg_url, workspace=workspace) == {"runs": 0, "metrics": 0}  # idempotent

    # The source went on after the copy: the next copy brings exactly what is new.
    sqlite.add_metrics(ids[3], [MetricRow(3, 30, "val", "auc", 0.9)])
    sqlite.finish(ids[3], "done", best={"val_auc": 0.9})
    assert migrate_store(pg_url, workspace=workspace) == {"runs": 1, "metrics": 1}
    assert pg.get_run(ids[3]).status is RunStatus.DONE and pg.count_metrics(ids[3]) == 15
    assert _metric_rows(pg) == _metric_rows(sqlite)


def test_migrating_into_a_store_that_already_has_runs_keeps_both(tmp_path, pg_url):
    a, b = RunStore(workspace=tmp_path / "a"), RunStore(workspace=tmp_path / "b")
    ra, rb = a.create_run(CONFIG), b.create_run(CONFIG)
    a.add_metrics(ra.id, [MetricRow(0, s, "train", "loss", s) for s in range(3)])
    b.add_metrics(rb.id, [MetricRow(0, s, "train", "loss", 10 + s) for s in range(3)])
    migrate_store(pg_url, workspace=tmp_path / "a")
    migrate_store(pg_url, workspace=tmp_path / "b")
    df, _ = RunStore(url=pg_url).metrics([ra.id, rb.id])
    assert df["id"].is_unique  # the target gives its own ids: the two sources' ids collided
    assert list(df.loc[df["run_id"] == rb.id, "value"]) == [10.0, 11.0, 12.0]


def test_cli_store_migrate(workspace, pg_url, capsys):
    from core.cli import main

    store = RunStore(workspace=workspace)
    rec = store.create_run(CONFIG)
    store.add_metrics(rec.id, [MetricRow(0, 0, "train", "loss", 0.5)])
    assert main(["store", "migrate", "--to", pg_url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"runs": 1, "metrics": 1}
    assert main(["store", "migrate", "--to", pg_url]) == 0
    assert "copied 0 run(s) and 0 metric row(s)" in capsys.readouterr().out
    sqlite_url = f"sqlite:///{workspace / db.DB_FILENAME}"
    assert main(["store", "migrate", "--to", sqlite_url]) == 2
    assert "same store" in capsys.readouterr().err


def test_migrating_a_workspace_without_runs_copies_nothing_and_prepares_the_target(tmp_path, pg_url):
    assert migrate_store(pg_url, workspace=tmp_path / "fresh") == {"runs": 0, "metrics": 0}
    assert not (tmp_path / "fresh" / db.DB_FILENAME).exists()  # the source is not created by reading it
    RunStore(url=pg_url).list_runs()  # the target's schema is there


def test_a_lost_server_connection_is_replaced_on_the_next_call(pg_url):
    import psycopg

    store = RunStore(url=pg_url)
    rec = store.create_run(CONFIG)
    with psycopg.connect(pg_url, autocommit=True) as admin:  # what a server restart does to clients
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = 'chestlab'"
        )
    with pytest.raises(psycopg.OperationalError):
        store.get_run(rec.id)
    assert store.get_run(rec.id).id == rec.id  # the worker's next tick works again
