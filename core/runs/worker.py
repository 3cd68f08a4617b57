"""The worker: one process per workspace that turns queued runs into training processes.

Started on demand (``ensure_worker``, on every submit and page render) in its own session,
so it outlives the app; a lock on ``<workspace>/worker.lock`` keeps it to one. Each tick it

1. watches its training processes: a death becomes ``failed`` with the reason and the last
   log lines; a cancel the trainer does not honour within ``cancel_grace_s`` is enforced;
2. adopts ``running`` runs whose process still lives (a restarted worker), and fails runs
   nobody can be watching (``lost``);
3. starts queued runs on free devices (``slots`` per device in ``settings.json``).

It exits after ``idle_exit_s`` with nothing queued or running.

``<workspace>/settings.json`` (all optional)::

    {"slots": {"cpu": 1, "cuda": 1, "cuda:1": 2},   # runs at once: by device, then kind
     "devices": ["cpu"],                             # fixed device list (no GPU probe)
     "launcher": "local",                            # or "ray" (see core.runs.ray_launcher)
     "local_command": ["{python}", "-m", "core", "train", "--run-id", "{run_id}", ...]}
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import ChestLabError, ConfigError, NotFoundError
from core.runs import run_log_path, tail_file
from core.runs.db import default_url
from core.runs.launcher import (
    LAUNCHERS,
    PROJECT_ROOT,
    DeviceInfo,
    Launcher,
    LaunchState,
    process_alive,
    ref_pid,
)
from core.runs.store import RunRecord, RunStatus, RunStore
from core.workspace import workspace_root

log = logging.getLogger("chestlab.worker")

SETTINGS_NAME = "settings.json"
LOCK_NAME = "worker.lock"
INFO_NAME = "worker.json"
LOG_NAME = "worker.log"
LOG_TAIL_LINES = 20
LINGER_S = 30.0  # a process still alive this long after its run finished is stopped


# -- settings and launcher -----------------------------------------------------------------


def load_settings(workspace: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    path = workspace_root(workspace) / SETTINGS_NAME
    try:
        settings = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(settings, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return settings


def launcher_name(settings: Mapping[str, Any]) -> str:
    """The workspace's choice (``cluster use``), else ``ray`` when ``$CHESTLAB_RAY_ADDRESS``
    is set, else ``local``."""
    from core.runs.ray_launcher import ADDRESS_ENV

    return str(settings.get("launcher") or ("ray" if os.environ.get(ADDRESS_ENV, "").strip() else "local"))


def make_launcher(settings: Mapping[str, Any], workspace: Path, store_url: str) -> Launcher:
    name = launcher_name(settings)
    try:
        factory = LAUNCHERS.get(name)
    except ValueError as exc:
        raise ConfigError(f"{workspace / SETTINGS_NAME}: launcher: {exc}") from None
    return factory.from_settings(workspace, store_url, settings)


def list_devices(workspace: str | os.PathLike[str] | None = None) -> list[DeviceInfo]:
    """The devices runs can use (the CPU, then GPUs with their free memory), as the
    workspace's launcher sees them. Probing GPUs takes seconds: cache the answer."""
    ws = workspace_root(workspace)
    return make_launcher(load_settings(ws), ws, default_url(ws)).devices()


def slot_counts(
    settings: Mapping[str, Any], devices: list[DeviceInfo], where: str = SETTINGS_NAME, default: int = 1
) -> dict[str, int]:
    """Runs allowed at once per device: ``slots[name]``, else ``slots[kind]``, else
    ``default`` (1; a launcher that queues runs itself, as Ray does, gives more)."""
    slots = settings.get("slots", {})
    if not isinstance(slots, Mapping):
        raise ConfigError(f'{where}: slots must be an object like {{"cpu": 1, "cuda": 1}}')
    out = {}
    for d in devices:
        n = slots.get(d.name, slots.get(d.kind, default))
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigError(f"{where}: slots.{d.name} must be a whole number >= 0, got {n!r}")
        out[d.name] = n
    return out


# -- the worker ------------------------------------------------------------------------------


@dataclass
class Child:
    run_id: str
    ref: str
    device: str
    log_path: Path
    cancel_seen: float | None = None  # when the worker first saw the cancel request
    ended_seen: float | None = None  # when the worker first saw the run finished while the process lived
    stopping: bool = False  # the launcher is stopping it (SIGTERM, then SIGKILL)


class Worker:
    def __init__(
        self,
        workspace: str | os.PathLike[str] | None = None,
        store: RunStore | None = None,
        launcher: Launcher | None = None,
        settings: Mapping[str, Any] | None = None,
        poll_s: float = 0.5,
        idle_exit_s: float = 600.0,
        cancel_grace_s: float = 3.0,
        kill_grace_s: float = 5.0,
        lost_after_s: float = 30.0,
    ) -> None:
        self.workspace = workspace_root(workspace)
        self.settings = dict(settings) if settings is not None else load_settings(self.workspace)
        self.store = store or RunStore(workspace=self.workspace)
        self.launcher = launcher or make_launcher(self.settings, self.workspace, self.store.url)
        self.poll_s = poll_s
        self.idle_exit_s = idle_exit_s
        self.cancel_grace_s = cancel_grace_s
        self.kill_grace_s = kill_grace_s
        self.lost_after_s = lost_after_s
        self.host = socket.gethostname()
        self.children: dict[str, Child] = {}
        self.devices = self.launcher.devices()
        self.slots = slot_counts(
            self.settings,
            self.devices,
            str(self.workspace / SETTINGS_NAME),
            getattr(self.launcher, "default_slots", 1),
        )
        log.info("devices: %s", ", ".join(f"{d.name} x{self.slots[d.name]}" for d in self.devices))

    # -- one tick --------------------------------------------------------------------------

    def tick(self) -> bool:
        """One pass; returns whether anything is queued or running."""
        # Running runs, and queued ones already handed to a launcher that queues them
        # itself (a Ray job waiting for resources): both have a process to watch.
        running = {
            r.id: r
            for r in self.store.list_runs([RunStatus.RUNNING, RunStatus.QUEUED])
            if r.status is RunStatus.RUNNING or r.launcher_ref
        }
        self._watch_children(running)
        self._adopt_or_fail_strays(running)
        queued = self._start_queued()
        return (
            bool(self.children)
            or queued
            or any(r.id not in self.children and r.status is RunStatus.RUNNING for r in running.values())
        )

    def _watch_children(self, running: dict[str, RunRecord]) -> None:
        now = time.monotonic()
        for child in list(self.children.values()):
            state = self.launcher.poll(child.ref)
            if not state.alive:
                self._ended(child, state)
                continue
            rec = running.get(child.run_id)
            if rec is not None and rec.status is RunStatus.QUEUED and not state.pending:
                self.store.mark_running(rec.id, child.ref)
            if child.stopping:
                continue
            if rec is None and state.pending:
                self._stop(child, "was cancelled or deleted before it started")
            elif rec is None:
                # Finished (or deleted) but the process has not exited: give it time to
                # clean up, then free the device.
                child.ended_seen = child.ended_seen or now
                if now - child.ended_seen >= LINGER_S:
                    self._stop(child, "finished but its process lingers")
            elif rec.cancel_requested:
                child.cancel_seen = child.cancel_seen or now
                if now - child.cancel_seen >= self.cancel_grace_s:
                    self._stop(child, f"did not stop within {self.cancel_grace_s:.0f} s of its cancel")

    def _stop(self, child: Child, why: str) -> None:
        # In a thread: the launcher waits out the SIGTERM grace, and other runs' deaths and
        # cancels must not wait behind it.
        log.warning("run %s %s: stopping it", child.run_id, why)
        child.stopping = True
        threading.Thread(
            target=self.launcher.cancel, args=(child.ref, self.kill_grace_s), daemon=True
        ).start()

    def _ended(self, child: Child, state: LaunchState) -> None:
        del self.children[child.run_id]
        try:
            rec = self.store.get_run(child.run_id)
        except NotFoundError:
            return
        submitted = rec.status is RunStatus.QUEUED and rec.launcher_ref == child.ref
        if rec.status is not RunStatus.RUNNING and not submitted:
            log.info("run %s: %s (process %s)", rec.id, rec.status.value, state.reason or "ended")
            return
        if child.cancel_seen is not None or rec.cancel_requested or state.cancelled:
            self.store.finish(rec.id, RunStatus.CANCELLED, only_if=[rec.status])
            log.info("run %s: cancelled (process %s)", rec.id, state.reason)
            return
        if state.exit_code == 0:
            reason = "training process exited without reporting a result (exit status 0)"
        else:
            reason = f"training process {state.reason or 'ended'}"
        self._fail(rec.id, reason, child.log_path, status=rec.status)

    def _fail(
        self, run_id: str, reason: str, log_path: Path | None, status: RunStatus = RunStatus.RUNNING
    ) -> None:
        tail = tail_file(log_path, LOG_TAIL_LINES) if log_path else ""
        error = reason + (f"\n--- last {LOG_TAIL_LINES} log lines ---\n{tail}" if tail else "")
        if self.store.finish(run_id, RunStatus.FAILED, error=error, only_if=[status]):
            log.warning("run %s: failed: %s", run_id, reason)

    def _watchable(self, rec: RunRecord) -> bool:
        # A local process can only be watched from its own machine.
        same_machine = self.launcher.name != "local" or rec.host == self.host
        return rec.launcher == self.launcher.name and bool(rec.launcher_ref) and same_machine

    def _adopt_or_fail_strays(self, running: dict[str, RunRecord]) -> None:
        for rec in running.values():
            if rec.id in self.children:
                continue
            if self._watchable(rec):
                assert rec.launcher_ref is not None
                state = self.launcher.poll(rec.launcher_ref)
                if state.alive:
                    log.info("run %s: adopting its running process (%s)", rec.id, rec.launcher_ref)
                    path = run_log_path(rec.id, self.workspace)
                    self.children[rec.id] = Child(rec.id, rec.launcher_ref, rec.device or "cpu", path)
                else:
                    path = run_log_path(rec.id, self.workspace)
                    self._fail(rec.id, f"training process {state.reason}", path, status=rec.status)
                continue
            if rec.status is not RunStatus.RUNNING:
                continue  # waiting in another launcher's queue: that launcher's worker watches it
            if rec.host == self.host and rec.pid:
                # Started otherwise on this machine (a foreground `python -m core train`):
                # its own business while its process lives, however long between heartbeats.
                ref = rec.launcher_ref if ref_pid(rec.launcher_ref) == rec.pid else str(rec.pid)
                if not process_alive(ref):
                    reason = f"training process (pid {rec.pid}) ended without reporting a result"
                    self._fail(rec.id, reason, run_log_path(rec.id, self.workspace))
                continue
            age = time.time() - (rec.heartbeat or rec.started or rec.created)
            if age > self.lost_after_s:
                where = f" on {rec.host}" if rec.host and rec.host != self.host else ""
                self._fail(
                    rec.id, f"lost: no heartbeat for {age:.0f} s{where}", run_log_path(rec.id, self.workspace)
                )

    # -- starting queued runs ----------------------------------------------------------------

    def _usable(self) -> list[DeviceInfo]:
        return [d for d in self.devices if self.slots[d.name] > 0]

    def unavailable_reason(self, requested: str) -> str | None:
        """Why a run asking for ``requested`` can never start here, or None."""
        usable = self._usable()
        names = [d.name for d in usable]
        if requested in names or (requested == "auto" and usable):
            return None
        if requested == "cuda" and any(d.kind == "cuda" for d in usable):
            return None
        have = ", ".join(names) or "no device with a free slot"
        return f"device {requested!r} is not available on {self.host} (usable here: {have}; see slots in {SETTINGS_NAME})"

    def placements(self) -> dict[str, str]:
        """For each device value a config may ask for, where it would start right now."""
        used = Counter(c.device for c in self.children.values())
        free = [d for d in self._usable() if self.slots[d.name] - used[d.name] > 0]
        out = {d.name: d.name for d in free}
        free_cuda = sorted((d for d in free if d.kind == "cuda"), key=lambda d: used[d.name])
        if free_cuda:
            out["cuda"] = free_cuda[0].name
        accelerators = [d for d in self._usable() if d.kind != "cpu"]
        free_accel = sorted((d for d in free if d.kind != "cpu"), key=lambda d: used[d.name])
        # "auto" waits for a busy GPU rather than falling back to a CPU that would take far longer.
        if free_accel:
            out["auto"] = free_accel[0].name
        elif not accelerators and "cpu" in out:
            out["auto"] = "cpu"
        return out

    def _start_queued(self) -> bool:
        queued = [
            r for r in self.store.list_runs([RunStatus.QUEUED], oldest_first=True) if not r.launcher_ref
        ]
        for rec in queued:
            reason = self.unavailable_reason(rec.requested_device)
            if reason:
                self._fail(rec.id, reason, None, status=RunStatus.QUEUED)
        while queued:
            places = self.placements()
            queue_in = self.launcher.name if getattr(self.launcher, "queues", False) else None
            rec = self.store.claim_next(self.host, list(places), queue_in) if places else None
            if rec is None:
                break
            self._launch(rec, places[rec.requested_device])
        return any(not r.launcher_ref for r in self.store.list_runs([RunStatus.QUEUED])) if queued else False

    def _launch(self, rec: RunRecord, device: str) -> None:
        path = run_log_path(rec.id, self.workspace)
        try:
            ref = self.launcher.start(rec, device, path)
        except Exception as exc:
            log.exception("run %s: could not start", rec.id)
            self._fail(rec.id, f"could not start the training process: {exc}", path, status=rec.status)
            return
        self.children[rec.id] = Child(rec.id, ref, device, path)
        if rec.status is RunStatus.QUEUED:  # held: its job waits in the launcher's queue
            message = f"submitted to {self.launcher.name}: waiting for resources"
            self.store.mark_submitted(rec.id, rec.launcher_ref or "", device, ref, message)
        else:
            self.store.mark_started(rec.id, ref_pid(ref), self.host, device, self.launcher.name, ref)
        log.info("run %s: started on %s (%s %s)", rec.id, device, self.launcher.name, ref)

    # -- the loop ------------------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None) -> None:
        """Tick until ``stop`` is set or nothing was queued or running for ``idle_exit_s``."""
        stop = stop or threading.Event()
        last_busy = time.monotonic()
        while not stop.is_set():
            try:
                busy = self.tick()
            except Exception:
                # A locked database or a launcher hiccup must not end the worker.
                log.exception("worker tick failed")
                busy = True
            now = time.monotonic()
            if busy:
                last_busy = now
            elif now - last_busy >= self.idle_exit_s:
                log.info("nothing queued or running for %.0f s: exiting", self.idle_exit_s)
                return
            stop.wait(self.poll_s)


# -- one worker per workspace ------------------------------------------------------------------


class WorkspaceLock:
    """An exclusive ``flock`` on ``<workspace>/worker.lock``. The kernel drops it when the
    holder dies, so a crashed worker never blocks the next one; the file is never deleted
    (deleting a flock file lets two holders lock two different inodes)."""

    def __init__(self, workspace: Path) -> None:
        self.path = workspace / LOCK_NAME
        self._fd: int | None = None

    def acquire(self, timeout_s: float = 0.0) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._fd = fd
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(0.05)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def worker_running(workspace: str | os.PathLike[str] | None = None) -> bool:
    """Whether a worker holds this workspace's lock (checked without waiting)."""
    lock = WorkspaceLock(workspace_root(workspace))
    if lock.acquire(0.0):
        lock.release()
        return False
    return True


def worker_info(workspace: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """``{"pid", "host", "started"}`` of the running worker, {} if none."""
    ws = workspace_root(workspace)
    if not worker_running(ws):
        return {}
    try:
        return json.loads((ws / INFO_NAME).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


_spawned: list[tuple[Path, subprocess.Popen[bytes], float]] = []  # workers this process started, when
SPAWN_SETTLE_S = 10.0
_spawn_lock = threading.Lock()


def _reap_spawned() -> None:
    _spawned[:] = [s for s in _spawned if s[1].poll() is None]


def ensure_worker(workspace: str | os.PathLike[str] | None = None) -> bool:
    """Start a detached worker for the workspace unless one runs; returns whether one was
    started. Cheap when a worker runs (one non-blocking lock test, no process spawned)."""
    ws = workspace_root(workspace)
    with _spawn_lock:
        _reap_spawned()
        # One we started moments ago is alive: it serves, or is about to, or lost to one
        # that does. (Later the lock alone decides: an old one may be on its way out.)
        now = time.monotonic()
        if any(w == ws and now - t < SPAWN_SETTLE_S for w, _, t in _spawned) or worker_running(ws):
            return False
        with open(ws / LOG_NAME, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "core", "worker", "--workspace", str(ws), "--detached"],
                cwd=PROJECT_ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        _spawned.append((ws, proc, now))
    return True


def stop_worker(workspace: str | os.PathLike[str] | None = None, timeout_s: float = 10.0) -> bool:
    """SIGTERM the workspace's worker (its training processes go on) and wait until it has
    exited. Returns whether a worker was stopped."""
    ws = workspace_root(workspace)
    pid = worker_info(ws).get("pid")
    if not pid:
        return False
    try:
        os.kill(int(pid), signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _reap_spawned()
        if not worker_running(ws) and not process_alive(str(pid)):
            return True
        time.sleep(0.05)
    return False


def serve(
    workspace: str | os.PathLike[str] | None = None,
    detached: bool = False,
    idle_exit_s: float = 600.0,
    poll_s: float = 0.5,
) -> int:
    """Run the workspace's worker in this process until idle or SIGTERM."""
    ws = workspace_root(workspace)
    lock = WorkspaceLock(ws)
    # A detached start waits a moment: ensure_worker's lock test may hold the lock briefly.
    if not lock.acquire(2.0 if detached else 0.0):
        if detached:
            log.info("another worker already serves %s", ws)
            return 0
        pid = worker_info(ws).get("pid", "?")
        raise ChestLabError(f"a worker already runs for workspace {ws} (pid {pid}); stop it or use that one")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        from core.fileio import atomic_write_json

        atomic_write_json(
            ws / INFO_NAME, {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        )
        log.info("worker %d serving %s", os.getpid(), ws)
        worker = Worker(ws, poll_s=poll_s, idle_exit_s=idle_exit_s)
        while True:
            worker.run(stop)
            if stop.is_set():
                return 0
            # Release first, then look: a run submitted before the release saw the lock
            # held and started no worker, so it must be found here; one submitted after
            # it starts its own worker.
            lock.release()
            if not worker.store.list_runs([RunStatus.QUEUED]) or not lock.acquire(0.0):
                return 0
            log.info("a run was queued while exiting: serving on")
    finally:
        lock.release()
