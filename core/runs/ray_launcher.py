"""Runs as Ray Jobs: the ``ray`` launcher.

A run is one Ray job whose entrypoint is the same ``python -m core train --run-id ID`` the
local launcher starts, with the project's code as the job's working directory (uploaded by
Ray, so nodes need ChestLab's Python packages but not a copy of its code) and the store URL
and workspace in the job's environment. Ray schedules: the worker hands it every queued run
(``default_slots`` per device), and a job waiting for resources shows ``queued``.

Ray's states map to ours: PENDING -> queued, RUNNING -> running, SUCCEEDED -> done (the
trainer reports its result), FAILED -> failed (Ray's message and the last log lines),
STOPPED -> cancelled. The job's log is copied into the run's ``log.txt`` while it runs, so
the log tail works as for local runs. A job the head no longer knows (restarted head,
deleted job), or a head unreachable for ``unreachable_fail_s``, fails the run.

Submitting and stopping go through ``ray.job_submission.JobSubmissionClient`` (imported only
here, when a run is submitted or stopped); polling, logs and the cluster's resources use the
same documented HTTP API of the dashboard with timeouts, so watching runs and showing the
cluster need no ``ray`` import and never hang on a stuck head.

Datasets and the workspace (run folders, checkpoints, the image cache) must be visible at
the same absolute path on every node: a shared filesystem. The training process checks
this first and fails at once naming the path and the node.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shlex
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import ConfigError
from core.runs.launcher import LAUNCHERS, PROJECT_ROOT, DeviceInfo, LaunchState, describe_exit

if TYPE_CHECKING:
    from core.runs.store import RunRecord

log = logging.getLogger("chestlab.ray")

ADDRESS_ENV = "CHESTLAB_RAY_ADDRESS"
INSTALL_HINT = 'pip install "ray[default]"'
# Ray's job states -> run statuses.
RAY_STATES = {
    "PENDING": "queued",
    "RUNNING": "running",
    "SUCCEEDED": "done",
    "FAILED": "failed",
    "STOPPED": "cancelled",
}
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
# Left out of the uploaded working directory (Ray also skips what .gitignore lists).
EXCLUDES = [
    "workspace/",
    ".git/",
    ".venv/",
    "__pycache__/",
    "*.pyc",
    ".pytest_cache/",
    ".ruff_cache/",
    "tests/e2e/artifacts/",
]
METADATA_RUN = "chestlab_run_id"
METADATA_WORKSPACE = "chestlab_workspace"


def normalize_address(address: str) -> str:
    """``HOST:8265`` or ``http://HOST:8265/`` -> ``http://HOST:8265`` (the dashboard's HTTP
    address, which the job API uses)."""
    address = address.strip().rstrip("/")
    if not address:
        raise ConfigError(
            f"Ray address is empty; give the dashboard's, e.g. http://HOST:8265 (or set ${ADDRESS_ENV})"
        )
    if address.startswith("ray://") or address.endswith(":6379") or address.endswith(":10001"):
        raise ConfigError(
            f"Ray address {address!r} is the cluster's GCS or client port; runs are submitted through "
            "the dashboard's job API: give http://HOST:8265"
        )
    if "://" not in address:
        address = f"http://{address}"
    if not address.startswith(("http://", "https://")):
        raise ConfigError(
            f"Ray address {address!r}: expected http://HOST:PORT (the dashboard, port 8265 by default)"
        )
    return address


class RayDashboard:
    """The Ray dashboard's HTTP API (jobs, nodes, resource usage), standard library only."""

    def __init__(self, address: str, timeout_s: float = 5.0) -> None:
        self.address = normalize_address(address)
        self.timeout_s = timeout_s

    def get(self, path: str) -> Any:
        """GET ``path`` as JSON. Raises ``LookupError`` on 404 and ``ConfigError`` (naming the
        address) when the head cannot be reached or answers with an error."""
        url = self.address + path
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as resp:
                return json.loads(resp.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise LookupError(path) from None
            raise ConfigError(f"Ray head at {self.address}: {path} answered HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ConfigError(
                f"Ray head at {self.address} is unreachable ({reason}); start it (`ray start --head`) "
                "or switch the workspace with `python -m core cluster use local`"
            ) from None

    def version(self) -> dict[str, Any]:
        return self.get("/api/version")

    def job(self, submission_id: str) -> dict[str, Any]:
        return self.get(f"/api/jobs/{urllib.parse.quote(submission_id)}")

    def job_logs(self, submission_id: str) -> str:
        return str(self.get(f"/api/jobs/{urllib.parse.quote(submission_id)}/logs").get("logs", ""))

    def jobs(self) -> list[dict[str, Any]]:
        return list(self.get("/api/jobs/"))

    def nodes(self) -> list[dict[str, Any]]:
        """Alive and dead nodes with their total resources (Ray's state API)."""
        data = self.get("/api/v0/nodes?limit=10000&detail=false")
        if not data.get("result", True):
            raise ConfigError(f"Ray head at {self.address}: node list failed ({data.get('msg', '')})")
        return list(data["data"]["result"]["result"])

    def usage(self) -> dict[str, tuple[float, float]] | None:
        """Resource name -> (used, total) from the autoscaler's report, or None where the
        head does not report it."""
        try:
            data = self.get("/api/cluster_status")
            usage = data["data"]["clusterStatus"]["loadMetricsReport"]["usage"]
        except (LookupError, KeyError, TypeError, ConfigError):
            return None
        return {
            k: (float(v[0]), float(v[1])) for k, v in usage.items() if isinstance(v, list) and len(v) == 2
        }


def resources(dash: RayDashboard) -> dict[str, Any]:
    """Nodes, CPUs and GPUs of the cluster: ``{"nodes": [...], "cpus": {"total", "free"},
    "gpus": {"total", "free"}}``. Free is None when the head does not report usage."""
    nodes = [
        {
            "node_id": n.get("node_id"),
            "host": n.get("node_name") or n.get("node_ip"),
            "alive": n.get("state") == "ALIVE",
            "head": bool(n.get("is_head_node")),
            "cpus": float((n.get("resources_total") or {}).get("CPU", 0.0)),
            "gpus": float((n.get("resources_total") or {}).get("GPU", 0.0)),
        }
        for n in dash.nodes()
    ]
    alive = [n for n in nodes if n["alive"]]
    usage = dash.usage()
    out: dict[str, Any] = {"nodes": nodes}
    for key, res in (("cpus", "CPU"), ("gpus", "GPU")):
        total = sum(n[key] for n in alive)
        used = usage.get(res, (0.0, total))[0] if usage is not None else None
        out[key] = {"total": total, "free": None if used is None else max(0.0, total - used)}
    return out


def _signal_exit(code: int | None) -> str:
    """Ray runs the entrypoint in a shell: 128 + N is "killed by signal N"."""
    if code is None:
        return "failed"
    if 128 < code < 160:
        return describe_exit(-(code - 128))
    return describe_exit(code)


@dataclass
class _Tail:
    """How much of a job's log is already in the run's log file."""

    path: Path
    offset: int  # characters of the job's log copied
    last: float = 0.0  # monotonic time of the last copy


@LAUNCHERS.register("ray")
class RayJobsLauncher:
    """Runs as Ray jobs on the cluster whose dashboard is at ``address``.

    ``python`` is the interpreter the job runs (on the node: ``python`` is the one on the
    cluster's PATH, the environment ``ray start`` ran from); ``num_cpus`` the CPUs each run
    reserves; a run on ``cuda`` reserves one GPU (Ray sets CUDA_VISIBLE_DEVICES, so the
    trainer sees it as cuda:0).
    """

    name = "ray"
    queues = True
    default_slots = 64

    def __init__(
        self,
        workspace: str | os.PathLike[str],
        store_url: str | None,
        address: str,
        python: str = "python",
        num_cpus: float = 1.0,
        log_interval_s: float = 1.0,
        unreachable_fail_s: float = 20.0,
    ) -> None:
        self.workspace = Path(workspace)
        self.store_url = store_url
        self.dashboard = RayDashboard(address)
        self.address = self.dashboard.address
        self.python = python
        self.num_cpus = float(num_cpus)
        self.log_interval_s = log_interval_s
        self.unreachable_fail_s = unreachable_fail_s
        self._client_obj: Any = None
        self._lock = threading.Lock()
        self._tails: dict[str, _Tail] = {}
        self._unreachable_since: dict[str, float] = {}
        self._last_state: dict[str, LaunchState] = {}

    @classmethod
    def from_settings(cls, workspace: Path, store_url: str, settings: Mapping[str, Any]) -> RayJobsLauncher:
        """From ``settings.json``: ``ray_address`` (else ``$CHESTLAB_RAY_ADDRESS``),
        ``ray_python``, ``ray_num_cpus``."""
        where = workspace / "settings.json"
        address = str(settings.get("ray_address") or os.environ.get(ADDRESS_ENV, "")).strip()
        if not address:
            raise ConfigError(
                f"{where}: launcher ray needs the cluster's address: "
                f"python -m core cluster use ray --address http://HOST:8265 (or set ${ADDRESS_ENV})"
            )
        python = settings.get("ray_python", "python")
        num_cpus = settings.get("ray_num_cpus", 1)
        if not isinstance(python, str) or not python:
            raise ConfigError(f"{where}: ray_python must be a command name or path, got {python!r}")
        if isinstance(num_cpus, bool) or not isinstance(num_cpus, int | float) or num_cpus < 0:
            raise ConfigError(f"{where}: ray_num_cpus must be a number >= 0, got {num_cpus!r}")
        return cls(workspace, store_url, address, python=python, num_cpus=float(num_cpus))

    # -- the Ray SDK ---------------------------------------------------------------------

    def _client(self) -> Any:
        with self._lock:
            if self._client_obj is None:
                try:
                    from ray.job_submission import JobSubmissionClient
                except ImportError:
                    raise ConfigError(
                        f"the Ray launcher needs Ray's job SDK: {INSTALL_HINT} "
                        "(or switch the workspace back with `python -m core cluster use local`)"
                    ) from None
                # Ray's SDK logs each file it leaves out of the upload at INFO: noise in worker.log.
                for name in ("ray._private.runtime_env.packaging", "ray.dashboard.modules.dashboard_sdk"):
                    logging.getLogger(name).setLevel(logging.WARNING)
                try:
                    self._client_obj = JobSubmissionClient(self.address)
                except Exception as exc:  # the SDK raises ConnectionError or RuntimeError
                    raise ConfigError(f"Ray head at {self.address}: cannot connect ({exc})") from None
            return self._client_obj

    def entrypoint(self, run: RunRecord, device: str) -> str:
        return shlex.join(
            [
                self.python, "-m", "core", "train", "--run-id", run.id, "--device", device,
                "--workspace", str(self.workspace),
            ]
        )  # fmt: skip

    def runtime_env(self, ref: str) -> dict[str, Any]:
        env = {
            "PYTHONUNBUFFERED": "1",
            "CHESTLAB_WORKSPACE": str(self.workspace),
            "CHESTLAB_LAUNCHER": self.name,
            "CHESTLAB_LAUNCHER_REF": ref,
        }
        if self.store_url:
            env["CHESTLAB_STORE_URL"] = self.store_url
        excludes = list(EXCLUDES)
        try:  # a workspace inside the project is never uploaded
            excludes.append(str(self.workspace.resolve().relative_to(PROJECT_ROOT)) + "/")
        except ValueError:
            pass
        return {"working_dir": str(PROJECT_ROOT), "excludes": excludes, "env_vars": env}

    # -- the Launcher interface -------------------------------------------------------------

    def start(self, run: RunRecord, device: str, log_path: Path) -> str:
        ref = f"chestlab-{run.id}-a{run.attempt}-{secrets.token_hex(3)}"
        entrypoint = self.entrypoint(run, device)
        gpus = 1.0 if device.startswith("cuda") else 0.0
        log_path.parent.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        header = (
            f"=== {stamp} attempt {run.attempt} on {device}: Ray job {ref} at {self.address}: {entrypoint}\n"
        )
        with open(log_path, "ab") as out:
            out.write(header.encode())
        self._client().submit_job(
            entrypoint=entrypoint,
            submission_id=ref,
            runtime_env=self.runtime_env(ref),
            entrypoint_num_cpus=self.num_cpus,
            entrypoint_num_gpus=gpus,
            metadata={
                METADATA_RUN: run.id,
                METADATA_WORKSPACE: str(self.workspace),
                "chestlab_device": device,
            },
        )
        self._tails[ref] = _Tail(log_path, 0)
        return ref

    def poll(self, ref: str) -> LaunchState:
        from core.runs.store import HOLD_PREFIX

        if ref.startswith(HOLD_PREFIX):  # its worker stopped between taking it and submitting it
            return LaunchState(False, None, "was never submitted: its worker stopped while submitting it")
        try:
            info = self.dashboard.job(ref)
        except LookupError:
            return self._forget(
                ref,
                LaunchState(
                    False,
                    None,
                    f"(Ray job {ref}) vanished: the Ray head at {self.address} no longer knows it "
                    "(the head was restarted, or the job was deleted)",
                ),
            )
        except ConfigError as exc:
            return self._unreachable(ref, str(exc))
        self._unreachable_since.pop(ref, None)
        status = str(info.get("status", ""))
        terminal = status in TERMINAL
        self._copy_logs(ref, info, force=terminal)
        if status == "PENDING":
            state = LaunchState(True, pending=True)
        elif not terminal:
            state = LaunchState(True)
        elif status == "SUCCEEDED":
            state = LaunchState(False, 0, f"(Ray job {ref}) ended with exit status 0")
        elif status == "STOPPED":
            state = LaunchState(False, None, f"(Ray job {ref}) was stopped", cancelled=True)
        else:
            code = info.get("driver_exit_code")
            message = (str(info.get("message") or "").strip().splitlines() or ["no message"])[0]
            state = LaunchState(False, code, f"(Ray job {ref}) {_signal_exit(code)}; Ray: {message}")
        if terminal:
            return self._forget(ref, state)
        self._last_state[ref] = state
        return state

    def _forget(self, ref: str, state: LaunchState) -> LaunchState:
        for d in (self._tails, self._unreachable_since, self._last_state):
            d.pop(ref, None)
        return state

    def _unreachable(self, ref: str, why: str) -> LaunchState:
        now = time.monotonic()
        since = self._unreachable_since.setdefault(ref, now)
        if now - since >= self.unreachable_fail_s:
            return self._forget(
                ref, LaunchState(False, None, f"(Ray job {ref}) lost for {now - since:.0f} s: {why}")
            )
        return self._last_state.get(ref, LaunchState(True))

    def _copy_logs(self, ref: str, info: Mapping[str, Any], force: bool) -> None:
        tail = self._tails.get(ref) or self._adopt_tail(ref, info)
        if tail is None:
            return
        now = time.monotonic()
        if not force and now - tail.last < self.log_interval_s:
            return
        tail.last = now
        try:
            text = self.dashboard.job_logs(ref)
        except (LookupError, ConfigError) as exc:
            log.debug("job %s: no logs yet (%s)", ref, exc)
            return
        if len(text) > tail.offset:
            with open(tail.path, "ab") as out:
                out.write(text[tail.offset :].encode("utf-8", errors="replace"))
            tail.offset = len(text)

    def _adopt_tail(self, ref: str, info: Mapping[str, Any]) -> _Tail | None:
        """A job this process did not submit (a restarted worker): continue its copy after
        what the log file already holds since the job's header line."""
        from core.runs import run_log_path

        run_id = (info.get("metadata") or {}).get(METADATA_RUN)
        if not run_id:
            return None
        path = run_log_path(run_id, self.workspace)
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            text = ""
        marker = f"Ray job {ref} "
        at = text.rfind(marker)
        if at < 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "ab") as out:
                out.write(f"=== Ray job {ref} at {self.address} (adopted)\n".encode())
            offset = 0
        else:
            body_start = text.find("\n", at)
            offset = 0 if body_start < 0 else len(text) - body_start - 1
        tail = self._tails[ref] = _Tail(path, offset)
        return tail

    def cancel(self, ref: str, grace_s: float) -> None:
        """``stop_job``: Ray sends SIGTERM, then SIGKILL after its own grace (3 s)."""
        try:
            self._client().stop_job(ref)
        except Exception as exc:  # gone already, or the head is down: poll() reports it
            log.warning("job %s: stop_job failed (%s)", ref, exc)
            return
        deadline = time.monotonic() + grace_s + 10.0
        while time.monotonic() < deadline:
            try:
                if str(self.dashboard.job(ref).get("status")) in TERMINAL:
                    return
            except (LookupError, ConfigError):
                return
            time.sleep(0.2)

    def devices(self) -> list[DeviceInfo]:
        """The CPU and, where the cluster has GPUs, ``cuda`` (any GPU Ray assigns)."""
        res = resources(self.dashboard)
        alive = sum(n["alive"] for n in res["nodes"])
        cpus, gpus = res["cpus"], res["gpus"]
        out = [DeviceInfo("cpu", "cpu", f"CPU on the Ray cluster ({_count(cpus)} CPUs, {alive} nodes)")]
        if gpus["total"] > 0:
            out.append(DeviceInfo("cuda", "cuda", f"GPU on the Ray cluster ({_count(gpus)} GPUs)"))
        return out


def _count(res: Mapping[str, float | None]) -> str:
    total = f"{res['total']:g}"
    return total if res["free"] is None else f"{res['free']:g} of {total} free"
