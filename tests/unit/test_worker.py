"""The worker with a fake trainer: runs start, finish, cancel, die, resume, and survive a
worker restart. The fake behaves like ``python -m core train --run-id``: it reports through
the store, checkpoints every step, honours ``should_stop`` and resumes from its checkpoint."""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from core.runs import run_dir, tail_file
from core.runs.launcher import DeviceInfo, LaunchState, LocalProcessLauncher, describe_exit, process_alive
from core.runs.store import RunStatus, RunStore
from core.runs.submit import cancel_run, delete_run, resume_run, submit_run, tail_log
from core.runs.worker import Worker, ensure_worker, stop_worker, worker_info, worker_running

FAKE_TRAINER = textwrap.dedent(
    """
    import json, os, sys, time
    sys.path.insert(0, sys.argv[1])
    from pathlib import Path
    from core.runs.store import RunStore, StoreReporter
    from core.train.reporter import MetricRow

    run_id, device, workspace = sys.argv[2:5]
    store = RunStore(workspace=workspace)
    rec = store.get_run(run_id)
    steps, mode = rec.config.get("fake_steps", 10), rec.config.get("fake_mode", "normal")
    reporter = StoreReporter(store, run_id, stop_interval_s=0.2)
    last = Path(workspace) / "runs" / run_id / "checkpoints" / "last.json"
    start = json.loads(last.read_text())["step"] if rec.resume and last.exists() else 0
    print(f"fake trainer {run_id} on {device}, starting at step {start}", flush=True)
    if mode == "ignore_term":
        import signal
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for step in range(start, steps):
        time.sleep(0.1)
        reporter.log_metrics([MetricRow(step // 5, step, "train", "loss", 1.0 / (step + 1))])
        reporter.progress((step + 1) / steps, step // 5, step, f"step {step + 1}/{steps}")
        last.parent.mkdir(parents=True, exist_ok=True)
        tmp = last.with_suffix(".tmp")
        tmp.write_text(json.dumps({"step": step + 1}))
        os.replace(tmp, last)
        print(f"step {step} loss {1.0 / (step + 1):.3f}", flush=True)
        if mode not in ("ignore_cancel", "ignore_term") and reporter.should_stop():
            print("cancel asked: stopping after a checkpoint", flush=True)
            reporter.finish("cancelled", {}, {})
            sys.exit(0)
    if mode == "exit0":
        sys.exit(0)
    reporter.finish("done", {"auc": 0.9}, {"auc": 0.88})
    print("finished", flush=True)
    """
)


@pytest.fixture
def fake_command(tmp_path) -> list[str]:
    script = tmp_path / "fake_trainer.py"
    script.write_text(FAKE_TRAINER)
    return ["{python}", str(script), "{project}", "{run_id}", "{device}", "{workspace}"]


@pytest.fixture
def store(workspace) -> RunStore:
    return RunStore(workspace=workspace)


def _kill_everything(store: RunStore, workspace: Path) -> None:
    stop_worker(workspace)
    for rec in store.list_runs():
        if rec.pid:
            try:
                os.killpg(rec.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


@pytest.fixture
def worker(workspace, store, fake_command):
    """``worker(**kwargs)`` starts an in-process worker (a thread) with the fake trainer and
    only a CPU; every worker and training process is stopped at the end of the test."""
    started: list[tuple[Worker, threading.Event, threading.Thread]] = []

    def start(slots: int = 1, **kwargs) -> Worker:
        launcher = LocalProcessLauncher(workspace, store.url, command=fake_command, device_names=["cpu"])
        w = Worker(
            workspace,
            store=store,
            launcher=launcher,
            settings={"slots": {"cpu": slots}},
            poll_s=0.2,
            **kwargs,
        )
        stop = threading.Event()
        thread = threading.Thread(target=w.run, args=(stop,), daemon=True)
        thread.start()
        started.append((w, stop, thread))
        return w

    yield start
    for w, stop, thread in started:
        stop.set()
        thread.join(10)
        for child in list(w.children.values()):
            w.launcher.cancel(child.ref, 0.5)
            w.launcher.poll(child.ref)
    _kill_everything(store, workspace)


def _submit(workspace, **config) -> str:
    return submit_run({"device": "cpu", **config}, workspace, start_worker=False, validate=False).id


def _wait(store: RunStore, run_id: str, cond, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rec = store.get_run(run_id)
        if cond(rec):
            return rec
        time.sleep(0.05)
    raise AssertionError(f"timed out; run is {rec.status.value}: {rec.message!r} {rec.error!r}")


def _status(*statuses: RunStatus):
    return lambda rec: rec.status in statuses


def test_a_run_goes_from_queued_to_done_with_its_metrics(workspace, store, worker):
    run_id = _submit(workspace, fake_steps=8, name="fake")
    assert json.loads((run_dir(run_id) / "config.json").read_text())["fake_steps"] == 8
    worker()
    running = _wait(store, run_id, lambda r: r.status is RunStatus.RUNNING and r.pid)
    assert running.device == "cpu" and running.launcher == "local"
    done = _wait(store, run_id, _status(RunStatus.DONE))
    assert done.progress == 1.0 and done.best == {"auc": 0.9} and done.test == {"auc": 0.88}
    assert store.count_metrics(run_id) == 8
    assert "finished" in tail_log(run_id)


def test_runs_wait_for_a_free_slot_and_a_cancelled_queued_run_never_starts(workspace, store, worker):
    first = _submit(workspace, fake_steps=10)
    second = _submit(workspace, fake_steps=5)
    third = _submit(workspace, fake_steps=5)
    worker(slots=1)
    _wait(store, first, lambda r: r.pid is not None)
    assert store.get_run(second).status is RunStatus.QUEUED  # one CPU slot
    assert cancel_run(second).status is RunStatus.CANCELLED  # at once, without the worker
    _wait(store, third, _status(RunStatus.DONE))
    assert store.get_run(first).status is RunStatus.DONE
    never = store.get_run(second)
    assert never.status is RunStatus.CANCELLED and never.pid is None and never.started is None
    assert not (run_dir(second) / "log.txt").exists()


def test_cancel_of_a_running_run_keeps_its_checkpoint_and_log(workspace, store, worker):
    run_id = _submit(workspace, fake_steps=600)
    worker()
    _wait(store, run_id, lambda r: r.step >= 3)
    t0 = time.monotonic()
    cancel_run(run_id)
    rec = _wait(store, run_id, _status(RunStatus.CANCELLED, RunStatus.FAILED, RunStatus.DONE))
    seconds = time.monotonic() - t0
    print(f"\ncancel -> cancelled (trainer honours should_stop): {seconds:.2f} s")
    assert rec.status is RunStatus.CANCELLED and seconds < 10
    assert json.loads((run_dir(run_id) / "checkpoints" / "last.json").read_text())["step"] >= 3
    assert "cancel asked" in tail_log(run_id)


@pytest.mark.parametrize(
    "mode, grace",
    [("ignore_cancel", {}), ("ignore_term", {"cancel_grace_s": 1.0, "kill_grace_s": 1.0})],
    ids=["sigterm-default-timing", "sigkill-short-grace"],
)
def test_a_trainer_that_ignores_the_cancel_is_stopped_within_10_s(workspace, store, worker, mode, grace):
    run_id = _submit(workspace, fake_steps=600, fake_mode=mode)
    w = worker(**grace)
    rec = _wait(store, run_id, lambda r: r.step >= 2)
    t0 = time.monotonic()
    cancel_run(run_id)
    rec = _wait(store, run_id, _status(RunStatus.CANCELLED, RunStatus.FAILED, RunStatus.DONE))
    seconds = time.monotonic() - t0
    print(
        f"\ncancel -> cancelled ({mode}, stopped by the worker, {grace or 'default grace'}): {seconds:.2f} s"
    )
    assert rec.status is RunStatus.CANCELLED and seconds < 10
    assert not process_alive(rec.launcher_ref) and run_id not in w.children
    assert (run_dir(run_id) / "checkpoints" / "last.json").exists() and "loss" in tail_log(run_id)


def test_a_killed_training_process_shows_failed_with_the_reason_and_its_log(workspace, store, worker):
    run_id = _submit(workspace, fake_steps=600)
    worker()
    rec = _wait(store, run_id, lambda r: r.step >= 3)
    t0 = time.monotonic()
    os.kill(rec.pid, signal.SIGKILL)
    rec = _wait(store, run_id, _status(RunStatus.FAILED, RunStatus.DONE, RunStatus.CANCELLED), timeout=30)
    seconds = time.monotonic() - t0
    print(f"\nkill -9 -> failed: {seconds:.2f} s")
    assert rec.status is RunStatus.FAILED and seconds < 30
    assert "killed by SIGKILL (out of memory, or kill -9)" in rec.error
    assert "step 2 loss" in rec.error  # the last log lines


def test_a_trainer_exiting_without_a_result_fails(workspace, store, worker):
    run_id = _submit(workspace, fake_steps=2, fake_mode="exit0")
    worker()
    rec = _wait(store, run_id, _status(RunStatus.FAILED, RunStatus.DONE))
    assert rec.status is RunStatus.FAILED and "exited without reporting a result" in rec.error


def test_resume_continues_from_the_last_checkpoint(workspace, store, worker):
    run_id = _submit(workspace, fake_steps=15)
    worker()
    _wait(store, run_id, lambda r: r.step >= 3)
    cancel_run(run_id)
    _wait(store, run_id, _status(RunStatus.CANCELLED))
    stopped_at = json.loads((run_dir(run_id) / "checkpoints" / "last.json").read_text())["step"]
    rec = resume_run(run_id, start_worker=False)
    assert rec.status is RunStatus.QUEUED and rec.attempt == 2
    done = _wait(store, run_id, _status(RunStatus.DONE))
    assert f"starting at step {stopped_at}" in tail_log(run_id)
    assert store.count_metrics(run_id) == 15  # steps of both attempts, none twice
    delete_run(done.id)
    assert not run_dir(run_id).exists() and store.list_runs() == []


def test_a_config_asking_for_a_missing_device_fails_at_once(workspace, store, worker):
    cuda = _submit(workspace, device="cuda")
    gpu1 = _submit(workspace, device="cuda:1")
    worker()
    for run_id, device in ((cuda, "cuda"), (gpu1, "cuda:1")):
        rec = _wait(store, run_id, _status(RunStatus.FAILED), timeout=5)
        assert f"device '{device}' is not available" in rec.error and "cpu" in rec.error


class _FakeGPUs:
    name = "local"

    def devices(self) -> list[DeviceInfo]:
        return [
            DeviceInfo("cpu", "cpu", "CPU"),
            DeviceInfo("cuda:0", "cuda", "A"),
            DeviceInfo("cuda:1", "cuda", "B"),
        ]


def test_placement_auto_prefers_a_free_gpu_and_waits_for_a_busy_one(workspace, store):
    from core.runs.worker import Child

    w = Worker(workspace, store=store, launcher=_FakeGPUs(), settings={"slots": {"cuda:1": 2}})
    assert w.slots == {"cpu": 1, "cuda:0": 1, "cuda:1": 2}
    assert w.placements() == {
        "cpu": "cpu",
        "cuda:0": "cuda:0",
        "cuda:1": "cuda:1",
        "cuda": "cuda:0",
        "auto": "cuda:0",
    }
    w.children["a"] = Child("a", "1", "cuda:0", Path("x"))
    assert w.placements()["auto"] == "cuda:1" and "cuda:0" not in w.placements()
    w.children["b"] = Child("b", "2", "cuda:1", Path("x"))
    w.children["c"] = Child("c", "3", "cuda:1", Path("x"))
    assert w.placements() == {"cpu": "cpu"}  # auto and cuda wait for a GPU rather than take the CPU
    assert w.unavailable_reason("cuda:1") is None and "cuda:2" in w.unavailable_reason("cuda:2")
    cpu_only = Worker(workspace, store=store, launcher=_FakeGPUs(), settings={"slots": {"cuda": 0}})
    assert cpu_only.placements() == {"cpu": "cpu", "auto": "cpu"}
    assert "not available" in cpu_only.unavailable_reason("cuda")


def test_runs_nobody_watches_are_marked_failed(workspace, store, fake_command):
    launcher = LocalProcessLauncher(workspace, store.url, command=fake_command, device_names=["cpu"])
    w = Worker(workspace, store=store, launcher=launcher, settings={})
    lost = store.create_run({"device": "cpu"})
    store.claim_next("h")  # claimed by a worker that died before starting it
    store._conn().execute("UPDATE runs SET heartbeat = ? WHERE id = ?", (time.time() - 45, lost.id))
    dead = store.create_run({"device": "cpu"})
    store.claim_next(w.host)
    store.mark_started(dead.id, 2**22 + 7, w.host, "cpu", "local", f"{2**22 + 7}:1")  # no such process
    fresh = store.create_run({"device": "cpu"})
    store.claim_next("other-host")
    foreground = store.create_run({"device": "cpu"})  # `python -m core train` in a terminal
    store.claim_run(foreground.id, w.host)
    store.mark_started(foreground.id, os.getpid(), w.host, "cpu", "foreground", str(os.getpid()))
    gone = store.create_run({"device": "cpu"})
    store.claim_run(gone.id, w.host)
    store.mark_started(gone.id, 2**22 + 9, w.host, "cpu", "foreground", str(2**22 + 9))
    store._conn().execute(
        "UPDATE runs SET heartbeat = ? WHERE id IN (?, ?)", (time.time() - 45, foreground.id, gone.id)
    )
    w.tick()
    assert "lost: no heartbeat for 45 s" in store.get_run(lost.id).error
    assert store.get_run(dead.id).status is RunStatus.FAILED
    assert store.get_run(fresh.id).status is RunStatus.RUNNING  # heartbeat still fresh
    assert (
        store.get_run(foreground.id).status is RunStatus.RUNNING
    )  # its process lives: a slow step is no death
    assert "ended without reporting a result" in store.get_run(gone.id).error
    assert not w.children  # nothing was adopted or started


def test_exit_reasons_are_readable():
    assert describe_exit(-9) == "killed by SIGKILL (out of memory, or kill -9)"
    assert describe_exit(-11) == "killed by SIGSEGV (crashed: segmentation fault)"
    assert describe_exit(1) == "exited with status 1"
    assert LaunchState(False, 1, "x").alive is False


def test_tail_file_reads_the_end(tmp_path):
    path = tmp_path / "log.txt"
    path.write_text("".join(f"line {i}\n" for i in range(10_000)))
    assert tail_file(path, 3) == "line 9997\nline 9998\nline 9999"
    assert tail_file(tmp_path / "missing.txt") == ""


# -- a real worker process -------------------------------------------------------------------


@pytest.fixture
def worker_settings(workspace, store, fake_command):
    (workspace / "settings.json").write_text(json.dumps({"devices": ["cpu"], "local_command": fake_command}))
    yield
    _kill_everything(store, workspace)


def _wait_for(cond, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_ensure_worker_starts_exactly_one_worker(workspace, worker_settings):
    from core.runs import worker as worker_module

    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(ensure_worker(workspace))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, False, True]
    _wait_for(lambda: worker_running(workspace) and worker_info(workspace).get("pid"))
    assert ensure_worker(workspace) is False  # a running worker: no new process
    pid = worker_info(workspace)["pid"]
    assert [p.pid for _, p, _ in worker_module._spawned if p.poll() is None] == [pid]


def test_a_second_worker_process_exits_when_one_serves(workspace, worker_settings):
    import subprocess

    assert ensure_worker(workspace)
    _wait_for(lambda: worker_info(workspace).get("pid"))
    second = subprocess.run(
        [sys.executable, "-m", "core", "worker", "--workspace", str(workspace)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 2 and "a worker already runs" in second.stderr
    detached = subprocess.run(
        [sys.executable, "-m", "core", "worker", "--workspace", str(workspace), "--detached"],
        capture_output=True,
        timeout=60,
    )
    assert detached.returncode == 0 and worker_running(workspace)


def test_a_restarted_worker_adopts_a_running_run(workspace, store, worker_settings):
    run_id = submit_run({"device": "cpu", "fake_steps": 60}, workspace, validate=False).id
    rec = _wait(store, run_id, lambda r: r.pid is not None and r.step >= 2, timeout=60)
    first_worker = worker_info(workspace)["pid"]
    assert stop_worker(workspace)
    assert process_alive(rec.launcher_ref)  # the run goes on without a worker
    assert ensure_worker(workspace)
    _wait_for(lambda: worker_info(workspace).get("pid") not in (None, first_worker), timeout=30)
    _wait_for(lambda: "adopting" in (workspace / "worker.log").read_text(), timeout=30)
    assert store.get_run(run_id).status is RunStatus.RUNNING
    os.kill(rec.pid, signal.SIGKILL)  # the adopted process dies: the new worker notices
    failed = _wait(store, run_id, _status(RunStatus.FAILED, RunStatus.DONE), timeout=30)
    assert failed.status is RunStatus.FAILED and "exit status is unknown" in failed.error


def test_an_idle_worker_exits_and_frees_the_workspace(workspace, worker_settings):
    import subprocess

    t0 = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "core", "worker", "--workspace", str(workspace), "--idle-exit", "0.5"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and "nothing queued or running" in done.stderr
    assert time.monotonic() - t0 < 30 and not worker_running(workspace)
