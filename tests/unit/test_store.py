"""The run store: schema, run life cycle rules, atomic claims, metric rows from several
processes at once, incremental reads, the reporter and the CLI over it. Every test of the
``store`` fixture runs on SQLite and on a real PostgreSQL server (tests/conftest.py)."""

from __future__ import annotations

import json
import math
import multiprocessing
import re
import sqlite3
import time

import pytest

from core.errors import ConfigError, NotFoundError
from core.runs import db
from core.runs.store import RunStatus, RunStore, StoreReporter
from core.train.reporter import MetricRow

CONFIG = {"arch": "resnet18", "loss": "weighted_ce", "sampler": "none", "device": "cpu", "epochs": 2}


# The PostgreSQL variants need a server (started once per session) and are slower: `slow`.
@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def store(request, workspace) -> RunStore:
    if request.param == "sqlite":
        return RunStore(workspace=workspace)
    return RunStore(url=request.getfixturevalue("pg_url"))


def test_schema_is_created_once_in_the_workspace(workspace):
    RunStore(workspace=workspace)
    RunStore(workspace=workspace)  # reopening migrates nothing twice
    con = sqlite3.connect(workspace / "chestlab.db")
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"runs", "metrics", "schema_version"} <= tables
    assert con.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.execute("INSERT INTO schema_version VALUES (99)")
    con.commit()
    with pytest.raises(ConfigError, match="schema version 99, newer"):
        RunStore(workspace=workspace)


def test_store_url_from_environment_and_unsupported_schemes(tmp_path, monkeypatch):
    monkeypatch.setenv("CHESTLAB_STORE_URL", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    assert RunStore(workspace=tmp_path / "ws").where == str(tmp_path / "elsewhere.db")
    with pytest.raises(ConfigError, match="mysql"):
        RunStore(url="mysql://host/db")


def test_placeholders_translate_for_format_style_drivers():
    sql = "SELECT * FROM runs WHERE id = ? AND name LIKE 'a%' AND status IN (?, ?)"
    assert (
        db.to_format_params(sql)
        == "SELECT * FROM runs WHERE id = %s AND name LIKE 'a%%' AND status IN (%s, %s)"
    )


def test_create_get_and_list(store):
    a = store.create_run(CONFIG, tags=["baseline"])
    time.sleep(0.01)
    b = store.create_run({**CONFIG, "name": "focal run", "tags": ["x", "y"], "device": "cuda:1"})
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{4}", a.id)
    got = store.get_run(a.id)
    assert got.status is RunStatus.QUEUED and got.config == CONFIG and got.tags == ["baseline"]
    assert got.name == "resnet18-weighted_ce" and got.requested_device == "cpu"
    assert store.get_run(b.id).name == "focal run" and store.get_run(b.id).tags == ["x", "y"]
    assert [r.id for r in store.list_runs()] == [b.id, a.id]  # newest first
    assert [r.id for r in store.list_runs(oldest_first=True)] == [a.id, b.id]
    assert store.list_runs([RunStatus.DONE]) == []
    with pytest.raises(NotFoundError, match=r"'nope'.*python -m core runs"):
        store.get_run("nope")


def test_claim_takes_the_oldest_run_that_fits_a_device(store):
    gpu = store.create_run({**CONFIG, "device": "cuda:0"})
    cpu = store.create_run(CONFIG)
    got = store.claim_next("host-a", ["cpu", "auto"])
    assert got.id == cpu.id and got.status is RunStatus.RUNNING and got.host == "host-a" and got.heartbeat
    assert store.claim_next("host-a", ["cpu"]) is None
    assert store.claim_next("host-a", []) is None
    assert store.claim_next("host-a").id == gpu.id


def _claim_all(url: str, host: str, barrier, out) -> None:
    st = RunStore(url=url)
    barrier.wait()
    claimed = []
    while (rec := st.claim_next(host)) is not None:
        claimed.append(rec.id)
    out.put(claimed)


def _in_processes(target, args_list: list[tuple]) -> list:
    """Run ``target(*args, barrier, queue)`` in spawned processes that start together."""
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(len(args_list)), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, barrier, out)) for args in args_list]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    return results


def test_a_run_for_a_cluster_queue_shows_queued_until_its_job_runs(store):
    """Ray queues runs itself: taken by a worker, the run stays queued (and nobody else's)
    until its job runs."""
    rec = store.create_run(CONFIG)
    held = store.claim_next("w1", ["cpu"], queue_in="ray")
    assert held.id == rec.id and held.status is RunStatus.QUEUED and held.launcher == "ray"
    assert held.launcher_ref.startswith("submitting:w1:") and held.started is None
    assert store.claim_next("w2") is None  # held: not claimable
    store.mark_submitted(rec.id, held.launcher_ref, "cpu", "job-1", "waiting for resources")
    got = store.get_run(rec.id)
    assert got.status is RunStatus.QUEUED and got.launcher_ref == "job-1" and got.device == "cpu"
    assert store.claim_next("w2") is None  # waiting in Ray's queue: not claimable either
    assert not store.mark_running(rec.id, "another-job")
    assert store.mark_running(rec.id, "job-1")
    got = store.get_run(rec.id)
    assert got.status is RunStatus.RUNNING and got.started is not None
    store.finish(rec.id, "failed", error="x")
    store.requeue_for_resume(rec.id)
    assert store.claim_next("w2").id == rec.id  # resumed: a new job, claimable again


def test_cancelling_a_run_waiting_in_a_cluster_queue_flags_its_job(store):
    rec = store.create_run(CONFIG)
    held = store.claim_next("w1", queue_in="ray")
    store.mark_submitted(rec.id, held.launcher_ref, "cpu", "job-1", "waiting")
    got = store.request_cancel(rec.id)
    assert got.status is RunStatus.CANCELLED and got.cancel_requested  # a trainer starting anyway stops


def test_claim_run_starts_one_queued_run(store):
    rec = store.create_run(CONFIG)
    got = store.claim_run(rec.id, "here")
    assert got.status is RunStatus.RUNNING and got.host == "here"
    with pytest.raises(ConfigError, match="is running; only a queued run"):
        store.claim_run(rec.id, "here")


def test_racing_workers_claim_every_run_exactly_once(store):
    ids = {store.create_run(CONFIG).id for _ in range(300)}
    results = _in_processes(_claim_all, [(store.url, f"w{i}") for i in range(4)])
    claimed = [rid for r in results for rid in r]
    print(f"\nclaim race: 4 processes, 300 runs, claims per process {sorted(len(r) for r in results)}")
    assert sorted(claimed) == sorted(ids)  # each exactly once
    assert all(r.status is RunStatus.RUNNING for r in store.list_runs())


def _write_metrics(url: str, run_id: str, n: int, batch: int, barrier, out) -> None:
    reporter = StoreReporter(RunStore(url=url), run_id)
    barrier.wait()
    start = time.time()
    for first in range(0, n, batch):
        reporter.log_metrics(
            [
                MetricRow(epoch=i // 100, step=i, split="train", name="loss", value=i / n)
                for i in range(first, first + batch)
            ]
        )
    out.put((start, time.time()))


def test_four_processes_writing_metrics_lose_no_row(store):
    runs = [store.create_run(CONFIG).id for _ in range(4)]
    spans = _in_processes(_write_metrics, [(store.url, rid, 5000, 50) for rid in runs])
    seconds = max(e for _, e in spans) - min(s for s, _ in spans)
    print(
        f"\nmetric rows ({store.url.split(':')[0]}): 4 writers x 5000 rows in batches of 50: "
        f"{20000 / seconds:,.0f} rows/s ({seconds:.2f} s)"
    )
    df, last = store.metrics(runs)
    assert len(df) == 20_000 and last == df["id"].max()
    for rid in runs:
        steps = df.loc[df["run_id"] == rid, "step"]
        assert sorted(steps) == list(range(5000))


def test_metrics_read_incrementally(store):
    rid = store.create_run(CONFIG).id
    other = store.create_run(CONFIG).id
    store.add_metrics(rid, [MetricRow(0, s, "train", "loss", 1.0 / (s + 1)) for s in range(3)])
    store.add_metrics(other, [MetricRow(0, 0, "train", "loss", 9.0)])
    df, last = store.metrics([rid])
    assert list(df["step"]) == [0, 1, 2] and set(df["run_id"]) == {rid}
    empty, same = store.metrics([rid], after_id=last)
    assert empty.empty and same == last and list(empty.columns) == list(df.columns)
    store.add_metrics(rid, [MetricRow(1, 3, "val", "auc", 0.8), MetricRow(1, 3, "val", "loss", float("nan"))])
    new, last2 = store.metrics(rid, after_id=last)
    assert list(new["name"]) == ["auc", "loss"] and last2 > last
    assert math.isnan(new["value"].iloc[1])  # NaN survives as a missing value
    only_auc, _ = store.metrics([rid], names=["auc"])
    assert list(only_auc["value"]) == [0.8]


def test_cancel_rules(store):
    queued = store.create_run(CONFIG)
    assert store.request_cancel(queued.id).status is RunStatus.CANCELLED
    assert store.claim_next("h") is None  # a cancelled queued run never starts
    assert store.request_cancel(queued.id).status is RunStatus.CANCELLED  # idempotent

    running = store.create_run(CONFIG)
    store.claim_next("h")
    reporter = StoreReporter(store, running.id)
    assert not reporter.should_stop()
    rec = store.request_cancel(running.id)
    assert rec.status is RunStatus.RUNNING and rec.cancel_requested
    reporter._last_stop_check = 0.0  # the reporter reads the flag at most once a second
    assert reporter.should_stop()
    reporter.finish("cancelled", {}, {})
    assert store.get_run(running.id).status is RunStatus.CANCELLED

    done = store.create_run(CONFIG)
    store.claim_next("h")
    store.finish(done.id, RunStatus.DONE, best={"auc": 0.9})
    with pytest.raises(ConfigError, match="is done"):
        store.request_cancel(done.id)


def test_resume_and_delete_rules(store):
    rec = store.create_run(CONFIG)
    with pytest.raises(ConfigError, match="is queued; only failed or cancelled"):
        store.requeue_for_resume(rec.id)
    store.claim_next("h")
    with pytest.raises(ConfigError, match="running; cancel it first"):
        store.delete_run(rec.id)
    store.add_metrics(rec.id, [MetricRow(0, 0, "train", "loss", 1.0)])
    store.finish(rec.id, RunStatus.FAILED, error="boom")
    again = store.requeue_for_resume(rec.id)
    assert again.status is RunStatus.QUEUED and again.resume and again.attempt == 2 and again.error == ""
    assert store.count_metrics(rec.id) == 1  # the metrics of the first attempt stay
    store.delete_run(rec.id)
    assert store.count_metrics(rec.id) == 0
    with pytest.raises(NotFoundError):
        store.get_run(rec.id)


def test_finish_only_if_does_not_overwrite_a_reported_result(store):
    rec = store.create_run(CONFIG)
    store.claim_next("h")
    store.finish(rec.id, "done", best={"auc": 0.91}, test={"auc": 0.9})
    assert not store.finish(rec.id, RunStatus.FAILED, error="late", only_if=[RunStatus.RUNNING])
    got = store.get_run(rec.id)
    assert got.status is RunStatus.DONE and got.best == {"auc": 0.91} and got.progress == 1.0


def test_stale_running_runs_are_found(store):
    old = store.create_run(CONFIG)
    store.claim_next("h")
    fresh = store.create_run(CONFIG)
    store.claim_next("h")
    store._conn().execute("UPDATE runs SET heartbeat = ? WHERE id = ?", (time.time() - 100, old.id))
    store.update_progress(fresh.id, 0.5, 1, 10, "epoch 1")
    assert [r.id for r in store.stale_running(30)] == [old.id]


def test_reporter_throttles_progress_but_writes_the_last_one(store):
    rid = store.create_run(CONFIG).id
    reporter = StoreReporter(store, rid)
    reporter.progress(0.1, 0, 1, "a")
    reporter.progress(0.2, 0, 2, "b")  # within 0.5 s: not written
    assert store.get_run(rid).progress == pytest.approx(0.1)
    reporter.progress(1.0, 1, 3, "done")
    got = store.get_run(rid)
    assert got.progress == 1.0 and got.step == 3 and got.message == "done"
    reporter.set_info(device="cpu", class_weights=[1.0, 2.5])
    reporter.set_info(n_train=10)
    assert store.get_run(rid).info == {"device": "cpu", "class_weights": [1.0, 2.5], "n_train": 10}


def test_cli_runs_cancel_resume(workspace, store, capsys, monkeypatch):
    import core.runs.worker
    from core.cli import main

    started = []
    monkeypatch.setattr(core.runs.worker, "ensure_worker", lambda ws=None: started.append(ws) or True)
    monkeypatch.setenv("CHESTLAB_STORE_URL", store.url)  # the CLI finds the store by URL

    rec = store.create_run({**CONFIG, "name": "cli run"})
    assert main(["runs", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == [
        {
            "run_id": rec.id,
            "name": "cli run",
            "status": "queued",
            "progress": 0.0,
            "pid": None,
            "device": None,
            "host": None,
            "launcher": "local",
            "error": "",
            "best": {},
        }
    ]
    failed = store.create_run({**CONFIG, "name": "broken"})
    store.finish(failed.id, "failed", error="data: /data/x.png: not a PNG")
    assert main(["runs", "--json"]) == 0
    [row] = [r for r in json.loads(capsys.readouterr().out) if r["run_id"] == failed.id]
    assert row["status"] == "failed" and row["error"] == "data: /data/x.png: not a PNG"
    assert main(["cancel", rec.id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"run_id": rec.id, "status": "cancelled"}
    assert main(["runs"]) == 0
    assert "cli run" in capsys.readouterr().out
    assert main(["cancel", "no-such-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no-such-run" in err[0]
    assert main(["resume", rec.id, "--json"]) == 0  # a cancelled run resumes (queued again)
    assert json.loads(capsys.readouterr().out) == {"run_id": rec.id, "status": "queued"}
    assert len(started) == 1  # and a worker is there to start it


def _read_live(url: str, run_ids: list[str], expected: int, barrier, out) -> None:
    """What a live page does: read only the rows written since the last read."""
    st = RunStore(url=url)
    barrier.wait()
    seen, last, deadline = [], 0, time.monotonic() + 120
    while len(seen) < expected and time.monotonic() < deadline:
        df, last = st.metrics(run_ids, after_id=last)
        seen += df["id"].tolist()
        time.sleep(0.002)
    out.put(seen)


def _read_live_or_write(role: str, url: str, arg, barrier, out) -> None:
    if role == "read":
        _read_live(url, arg[0], arg[1], barrier, out)
    else:
        _write_metrics(url, arg, 1500, 20, barrier, out)


def test_incremental_reads_never_skip_a_row_while_processes_write(store):
    """Ids handed out before commit must not become visible out of order, or a live reader
    that asks for ``id > last`` loses rows for good."""
    runs = [store.create_run(CONFIG).id for _ in range(3)]
    results = _in_processes(
        _read_live_or_write,
        [("read", store.url, (runs, 4500))] + [("write", store.url, rid) for rid in runs],
    )
    seen = next(r for r in results if isinstance(r, list))
    df, _ = store.metrics(runs)
    assert len(df) == 4500
    assert sorted(seen) == sorted(df["id"]) and len(set(seen)) == len(seen)  # all of them, each once
