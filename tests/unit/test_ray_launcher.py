"""Runs as Ray jobs. Without Ray: addresses, settings, the job's command and environment, a
head that stops answering, the path check a node makes, ``cluster`` on the CLI. With a real
local Ray head and a real PostgreSQL store (tests/conftest.py, ``slow``): three runs on the
demo data at 96 px, one finishing, one cancelled, one killed with ``kill -9``, then resumed as
a new job; a run whose dataset the node cannot see; the cluster's resources."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from core.errors import ConfigError, DataError
from core.runs import db, run_dir, run_log_path
from core.runs.cluster import cluster_status, use_launcher
from core.runs.execute import check_paths
from core.runs.launcher import PROJECT_ROOT
from core.runs.ray_launcher import RayJobsLauncher, _signal_exit, normalize_address
from core.runs.store import RunRecord, RunStatus, RunStore
from core.runs.submit import cancel_run, resume_run, submit_run
from core.runs.worker import Worker, launcher_name, load_settings, make_launcher
from tests.conftest import free_port

# -- without Ray ---------------------------------------------------------------------------


def test_addresses_are_the_dashboards():
    assert normalize_address("head:8265/") == "http://head:8265"
    assert normalize_address(" https://ray.example.org ") == "https://ray.example.org"
    for wrong in ("ray://head:10001", "head:6379"):
        with pytest.raises(ConfigError, match="dashboard"):
            normalize_address(wrong)
    with pytest.raises(ConfigError, match="CHESTLAB_RAY_ADDRESS"):
        normalize_address("")


def test_the_launcher_comes_from_settings_then_the_environment(workspace, monkeypatch):
    monkeypatch.delenv("CHESTLAB_RAY_ADDRESS", raising=False)
    assert launcher_name({}) == "local"
    monkeypatch.setenv("CHESTLAB_RAY_ADDRESS", "http://head:8265")
    assert launcher_name({}) == "ray"
    assert launcher_name({"launcher": "local"}) == "local"  # the workspace's own choice wins
    launcher = make_launcher({}, workspace, "postgresql://u@db/x")
    assert isinstance(launcher, RayJobsLauncher) and launcher.address == "http://head:8265"
    monkeypatch.delenv("CHESTLAB_RAY_ADDRESS")
    with pytest.raises(ConfigError, match=r"settings.json: launcher ray needs the cluster's address"):
        make_launcher({"launcher": "ray"}, workspace, "")
    with pytest.raises(ConfigError, match="ray_num_cpus"):
        make_launcher({"launcher": "ray", "ray_address": "h:8265", "ray_num_cpus": "two"}, workspace, "")


def _record(run_id: str = "20260101-000000-abcd", **kw) -> RunRecord:
    return RunRecord(id=run_id, name="r", status=RunStatus.RUNNING, config=kw.pop("config", {}), **kw)


def test_a_job_runs_the_same_train_command_with_the_store_and_workspace(tmp_path):
    ws = PROJECT_ROOT / "workspace"  # the default workspace sits inside the project
    launcher = RayJobsLauncher(ws, "postgresql://u:pw@db:5432/chestlab", "http://head:8265", num_cpus=2)
    cmd = launcher.entrypoint(_record(), "cuda")
    assert cmd == f"python -m core train --run-id 20260101-000000-abcd --device cuda --workspace {ws}"
    env = launcher.runtime_env("chestlab-x")
    assert env["working_dir"] == str(PROJECT_ROOT)
    assert "workspace/" in env["excludes"] and ".git/" in env["excludes"]
    assert env["env_vars"]["CHESTLAB_STORE_URL"] == "postgresql://u:pw@db:5432/chestlab"
    assert env["env_vars"]["CHESTLAB_WORKSPACE"] == str(ws)
    assert env["env_vars"]["CHESTLAB_LAUNCHER_REF"] == "chestlab-x"


def test_shell_exit_codes_read_as_signals():
    assert _signal_exit(137) == "killed by SIGKILL (out of memory, or kill -9)"
    assert _signal_exit(-9) == "killed by SIGKILL (out of memory, or kill -9)"
    assert _signal_exit(2) == "exited with status 2"


def test_a_head_that_stops_answering_fails_its_runs_after_a_grace(workspace):
    launcher = RayJobsLauncher(workspace, None, f"http://127.0.0.1:{free_port()}", unreachable_fail_s=0.3)
    assert launcher.poll("chestlab-job").alive  # a blip is not a death
    time.sleep(0.35)
    state = launcher.poll("chestlab-job")
    assert not state.alive and "unreachable" in state.reason and "chestlab-job" in state.reason
    with pytest.raises(ConfigError, match="unreachable"):
        use_launcher("ray", f"http://127.0.0.1:{free_port()}", workspace)
    assert load_settings(workspace) == {}  # nothing switched


def test_a_node_without_the_dataset_names_path_and_node(tmp_path, monkeypatch):
    import socket

    rec = _record(config={"data": str(tmp_path / "gone")})
    monkeypatch.setenv("CHESTLAB_LAUNCHER", "ray")
    monkeypatch.setenv("CHESTLAB_LAUNCHER_REF", "chestlab-job-7")
    monkeypatch.setenv("CHESTLAB_WORKSPACE", str(tmp_path))
    with pytest.raises(DataError) as err:
        check_paths(rec)
    msg = str(err.value)
    assert str(tmp_path / "gone") in msg and socket.gethostname() in msg and "chestlab-job-7" in msg
    assert "shared filesystem at the same path on every node" in msg
    monkeypatch.setenv("CHESTLAB_WORKSPACE", str(tmp_path / "no-workspace"))
    with pytest.raises(DataError, match="workspace .*no-workspace not found on node"):
        check_paths(_record(config={"data": str(tmp_path)}))
    assert not (tmp_path / "no-workspace").exists()  # not created locally in its place


def test_cli_cluster_status_local(workspace, capsys, monkeypatch):
    from core.cli import main

    monkeypatch.delenv("CHESTLAB_RAY_ADDRESS", raising=False)
    assert main(["cluster", "status", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"launcher", "address", "nodes", "cpus", "gpus", "running"} <= set(data)
    assert data["launcher"] == "local" and data["cpus"]["total"] == os.cpu_count()
    assert main(["cluster", "use"]) == 2
    assert "needs a launcher" in capsys.readouterr().err
    assert main(["cluster", "use", "local", "--json"]) == 0
    assert load_settings(workspace) == {"launcher": "local"}
    assert json.loads(capsys.readouterr().out)["launcher"] == "local"


def test_background_train_queues_a_gpu_run_for_the_cluster_from_a_machine_without_one(
    workspace, tiny_dataset, capsys, monkeypatch
):
    import core.runs.worker
    from core.cli import main

    started = []
    monkeypatch.setattr(core.runs.worker, "ensure_worker", lambda ws=None: started.append(ws) or True)
    (workspace / "settings.json").write_text(
        json.dumps({"launcher": "ray", "ray_address": "http://head:8265"})
    )
    flags = ["train", "--data", str(tiny_dataset), "--epochs", "1", "--img-size", "32", "--device", "cuda"]
    assert main([*flags, "--background", "--json"]) == 0  # this machine has no GPU; the cluster may
    run_id = json.loads(capsys.readouterr().out)["run_id"]
    assert RunStore().get_run(run_id).requested_device == "cuda" and started
    (workspace / "settings.json").write_text(json.dumps({"launcher": "local"}))
    assert main([*flags, "--background"]) == 2  # here it must be this machine's
    assert "CUDA is not available" in capsys.readouterr().err


# -- on a real Ray head, reporting to a real PostgreSQL ---------------------------------------


@pytest.fixture
def ray_workspace(workspace, ray_head, pg_url, monkeypatch):
    """The workspace switched to the session's Ray head, its store on PostgreSQL."""
    monkeypatch.setenv("CHESTLAB_STORE_URL", pg_url)
    monkeypatch.delenv("CHESTLAB_RAY_ADDRESS", raising=False)
    status = use_launcher("ray", ray_head.address, workspace)
    assert status["launcher"] == "ray" and status["reachable"], status
    return workspace


@pytest.fixture
def ray_worker(ray_workspace):
    """An in-process worker (a thread) on the workspace's Ray launcher."""
    store = RunStore()
    worker = Worker(ray_workspace, store=store, poll_s=0.3, idle_exit_s=3600)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    yield worker
    stop.set()
    thread.join(15)
    for child in list(worker.children.values()):  # jobs still live: stop them
        worker.launcher.cancel(child.ref, 1.0)


def _wait(store: RunStore, run_id: str, cond, timeout: float, what: str) -> RunRecord:
    deadline = time.monotonic() + timeout
    while True:
        rec = store.get_run(run_id)
        if cond(rec):
            return rec
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: timed out after {timeout:.0f} s; run is {rec.status.value}: "
                                 f"{rec.message!r} {rec.error[-1500:]!r}")  # fmt: skip
        time.sleep(0.2)


def _demo_config(data: Path, epochs: int, seed: int) -> dict:
    return {"data": str(data), "arch": "resnet18", "img_size": 96, "epochs": epochs, "batch_size": 16,
            "device": "cpu", "augment": "none", "schedule": "none", "seed": seed, "name": f"ray-{epochs}-{seed}",
            "pretrained": "none"}  # fmt: skip


@pytest.mark.slow
def test_three_runs_on_ray_finish_cancel_die_and_resume(ray_worker, tmp_path, pg_url):
    from core.data.demo import write_demo

    store = ray_worker.store
    demo = Path(write_demo(tmp_path / "demo", n_patients=16, size=96).root)
    done_id = submit_run(_demo_config(demo, 1, 0), start_worker=False).id
    cancel_id = submit_run(_demo_config(demo, 200, 1), start_worker=False).id
    kill_id = submit_run(_demo_config(demo, 200, 2), start_worker=False).id
    ids = [done_id, cancel_id, kill_id]

    # Two CPUs, one per job: two run, the third waits in Ray's queue and shows queued.
    seen_waiting = False
    deadline = time.monotonic() + 240
    while store.get_run(done_id).status is not RunStatus.DONE:
        recs = [store.get_run(i) for i in ids]
        running = [r for r in recs if r.status is RunStatus.RUNNING]
        waiting = [r for r in recs if r.status is RunStatus.QUEUED and r.launcher_ref]
        seen_waiting |= len(running) == 2 and len(waiting) == 1
        assert not any(r.status is RunStatus.FAILED for r in recs), [r.error for r in recs]
        assert time.monotonic() < deadline, [(r.status.value, r.message) for r in recs]
        time.sleep(0.2)
    assert seen_waiting, "a Ray job waiting for a CPU never showed as queued"

    done = store.get_run(done_id)
    assert done.launcher == "ray" and done.launcher_ref.startswith(f"chestlab-{done_id}-a1-")
    metrics, _ = store.metrics(done_id)
    assert {("train", "loss"), ("val", "auc"), ("val", "loss")} <= set(
        zip(metrics["split"], metrics["name"], strict=True)
    )
    # ... and the job reported them to the PostgreSQL server, read here with its own driver
    import psycopg

    with psycopg.connect(pg_url) as conn:
        in_pg = conn.execute("SELECT count(*) FROM metrics WHERE run_id = %s", (done_id,)).fetchone()[0]
    assert in_pg == len(metrics) > 0
    assert not (ray_worker.workspace / db.DB_FILENAME).exists()  # nothing went to the workspace's SQLite
    # The trainer marks its run done itself; the worker copies the rest of the job's log at
    # its next poll (about a second later).
    deadline = time.monotonic() + 15
    while "epoch 1/1" not in (log_text := run_log_path(done_id).read_text()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert f"Ray job {done.launcher_ref}" in log_text and "epoch 1/1" in log_text  # the job's log, copied

    # status while two runs live: the head's CPUs and our jobs
    status = cluster_status()
    assert status["cpus"]["total"] == 2.0 and len([n for n in status["nodes"] if n["alive"]]) == 1
    assert {r["run_id"] for r in status["running"]} >= {cancel_id}

    # cancel: shows cancelled within 10 s, keeps its checkpoint
    last = run_dir(cancel_id) / "checkpoints" / "last.pt"
    _wait(store, cancel_id, lambda r: r.status is RunStatus.RUNNING and last.exists(), 180, "a checkpoint")
    t0 = time.monotonic()
    cancel_run(cancel_id)
    rec = _wait(store, cancel_id, lambda r: r.status.finished, 10, "cancel within 10 s")
    print(f"\nray: cancel -> cancelled in {time.monotonic() - t0:.1f} s")
    assert rec.status is RunStatus.CANCELLED and last.exists()

    # kill -9 of the training process: failed within 30 s, with the reason and the log
    last = run_dir(kill_id) / "checkpoints" / "last.pt"
    rec = _wait(
        store,
        kill_id,
        lambda r: r.status is RunStatus.RUNNING and r.pid and last.exists(),
        240,
        "a checkpoint",
    )
    first_job = rec.launcher_ref
    t0 = time.monotonic()
    os.kill(rec.pid, signal.SIGKILL)
    rec = _wait(store, kill_id, lambda r: r.status.finished, 30, "failed within 30 s")
    print(f"ray: kill -9 -> failed in {time.monotonic() - t0:.1f} s")
    assert rec.status is RunStatus.FAILED
    assert "SIGKILL" in rec.error and first_job in rec.error and "last 20 log lines" in rec.error

    # resume: a new job continues from the last checkpoint
    resume_run(kill_id, start_worker=False)
    rec = _wait(store, kill_id, lambda r: r.status is RunStatus.RUNNING and r.launcher_ref != first_job
                and r.pid, 180, "the resumed job")  # fmt: skip
    assert rec.attempt == 2 and rec.launcher_ref.startswith(f"chestlab-{kill_id}-a2-")
    _wait(store, kill_id, lambda r: "resumed from" in run_log_path(kill_id).read_text(), 120, "resume in log")
    cancel_run(kill_id)
    assert _wait(store, kill_id, lambda r: r.status.finished, 10, "cancel").status is RunStatus.CANCELLED


@pytest.mark.slow
def test_a_job_that_cannot_see_its_dataset_fails_at_once_naming_it(ray_worker, tmp_path):
    store = ray_worker.store
    missing = tmp_path / "not-mounted-here"
    run_id = submit_run(_demo_config(missing, 1, 0), start_worker=False, validate=False).id
    rec = _wait(store, run_id, lambda r: r.status.finished, 180, "the run's failure")
    assert rec.status is RunStatus.FAILED
    assert f"dataset {missing} not found on node" in rec.error and rec.launcher_ref in rec.error
    assert "Traceback" not in rec.error


@pytest.mark.slow
def test_a_job_the_head_no_longer_knows_is_reported_vanished(ray_workspace, ray_head, capsys):
    from core.cli import main

    launcher = make_launcher(load_settings(ray_workspace), ray_workspace, "")
    state = launcher.poll("chestlab-20260101-000000-dead-a1-000000")
    assert not state.alive and "vanished" in state.reason and ray_head.address in state.reason
    assert main(["cluster", "status", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["launcher"] == "ray" and data["address"] == ray_head.address and data["reachable"]
    assert (
        data["cpus"]["total"] == 2.0 and 0.0 <= data["cpus"]["free"] <= 2.0 and data["gpus"]["total"] == 0.0
    )
    assert [d.name for d in launcher.devices()] == ["cpu"]
