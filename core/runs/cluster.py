"""Which launcher a workspace uses, and what it has: ``cluster use`` and ``cluster status``.

The choice lives in ``<workspace>/settings.json`` (``launcher``, ``ray_address``), so the
app, the CLI and the worker agree on it; without a choice, ``$CHESTLAB_RAY_ADDRESS`` selects
Ray. Switching restarts the workspace's worker with the new launcher; runs already started
go on where they are (local processes keep running; Ray jobs keep running and report to the
store) and every run stays in the store.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from core.errors import ConfigError
from core.runs.ray_launcher import ADDRESS_ENV, RAY_STATES, RayDashboard, normalize_address, resources
from core.runs.store import RunStatus, RunStore
from core.workspace import workspace_root

Workspace = str | os.PathLike[str] | None
KINDS = ("local", "ray")


def _ray_address(settings: dict[str, Any]) -> str | None:
    address = str(settings.get("ray_address") or os.environ.get(ADDRESS_ENV, "")).strip()
    return normalize_address(address) if address else None


def use_launcher(kind: str, address: str | None = None, workspace: Workspace = None) -> dict[str, Any]:
    """Make the workspace run its runs through ``kind`` (``local`` or ``ray``; Ray needs the
    dashboard's ``address``, else ``$CHESTLAB_RAY_ADDRESS``). The head must answer.
    Returns ``cluster_status``."""
    from core.fileio import atomic_write_json
    from core.runs.worker import SETTINGS_NAME, ensure_worker, load_settings, stop_worker

    ws = workspace_root(workspace)
    if kind not in KINDS:
        raise ConfigError(f"launcher {kind!r} unknown; valid: {', '.join(KINDS)}")
    settings = load_settings(ws)
    settings["launcher"] = kind
    if kind == "ray":
        address = normalize_address(address or os.environ.get(ADDRESS_ENV, ""))
        RayDashboard(address).version()  # unreachable -> one clear error, nothing written
        settings["ray_address"] = address
    else:
        settings.pop("ray_address", None)
    atomic_write_json(ws / SETTINGS_NAME, settings)
    # The worker reads settings once: the next one serves with the new launcher.
    stop_worker(ws)
    if RunStore(workspace=ws).list_runs([RunStatus.QUEUED]):
        ensure_worker(ws)
    return cluster_status(ws)


def cluster_status(workspace: Workspace = None) -> dict[str, Any]:
    """What the workspace's launcher has: ``{"launcher", "address", "reachable", "error",
    "nodes": [{"host", "alive", "head", "cpus", "gpus"}], "cpus": {"total", "free"},
    "gpus": {"total", "free"}, "running": [{"run_id", "name", "status", "device", "job"}]}``.
    Ray's numbers come from its dashboard over HTTP (no driver is connected); an unreachable
    head gives ``reachable: false`` and the reason in ``error``, never an exception."""
    from core.runs.worker import launcher_name, load_settings

    ws = workspace_root(workspace)
    settings = load_settings(ws)
    kind = launcher_name(settings)
    store = RunStore(workspace=ws)
    if kind == "ray":
        return _ray_status(_ray_address(settings), store)
    return _local_status(store)


def _live_runs(store: RunStore) -> list[dict[str, Any]]:
    return [
        {"run_id": r.id, "name": r.name, "status": r.status.value, "device": r.device, "job": r.launcher_ref}
        for r in store.list_runs([RunStatus.RUNNING])
    ]


def _local_status(store: RunStore) -> dict[str, Any]:
    from core.runs.launcher import probe_accelerators

    cpus = float(os.cpu_count() or 1)
    gpus = [d for d in probe_accelerators() if d.kind == "cuda"]
    running = _live_runs(store)
    busy = {r["device"] for r in running}
    return {
        "launcher": "local",
        "address": None,
        "reachable": True,
        "error": "",
        "nodes": [
            {"host": socket.gethostname(), "alive": True, "head": True, "cpus": cpus, "gpus": len(gpus)}
        ],
        # One machine: what the load average leaves, and the GPUs no run of ours uses.
        "cpus": {"total": cpus, "free": round(max(0.0, cpus - os.getloadavg()[0]), 1)},
        "gpus": {"total": float(len(gpus)), "free": float(sum(d.name not in busy for d in gpus))},
        "running": running,
    }


def _ray_status(address: str | None, store: RunStore) -> dict[str, Any]:
    out: dict[str, Any] = {
        "launcher": "ray",
        "address": address,
        "reachable": False,
        "error": "",
        "nodes": [],
        "cpus": {"total": 0.0, "free": None},
        "gpus": {"total": 0.0, "free": None},
        "running": [],
    }
    if address is None:
        out["error"] = (
            f"no Ray address: python -m core cluster use ray --address http://HOST:8265 (or set ${ADDRESS_ENV})"
        )
        return out
    dash = RayDashboard(address)
    try:
        out.update(resources(dash))
        jobs = dash.jobs()
    except (ConfigError, LookupError) as exc:
        out["error"] = str(exc)
        return out
    out["reachable"] = True
    names = {r.id: r for r in store.list_runs()}  # a finished run's job may still be exiting
    for job in jobs:
        ray_status = str(job.get("status", ""))
        if ray_status not in ("PENDING", "RUNNING"):
            continue
        run_id = (job.get("metadata") or {}).get("chestlab_run_id")
        rec = names.get(run_id) if run_id else None
        out["running"].append(
            {
                "run_id": run_id,
                "name": rec.name if rec else (job.get("entrypoint") or ""),
                "status": RAY_STATES[ray_status],
                "device": (job.get("metadata") or {}).get("chestlab_device"),
                "job": job.get("submission_id"),
            }
        )
    return out
