"""Run one stored run in this process: the body of ``python -m core train``.

Used both by the worker's training processes (``--run-id``, on this machine or as a Ray
job on another node) and by a foreground ``python -m core train``. Whatever happens, the run
ends with a status in the store, its log and its checkpoints on disk: a ChestLabError becomes
``failed`` with its one-line reason, any other exception ``failed`` with its type, message
and the traceback in the log.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import traceback
from pathlib import Path
from typing import Any

from core.errors import ChestLabError, DataError
from core.fileio import atomic_write_json
from core.runs import run_dir
from core.runs.store import RunRecord, RunStore, StoreReporter
from core.train.reporter import FolderReporter, MultiReporter, Reporter

log = logging.getLogger("chestlab.train")


def _log_to_file(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    logging.getLogger().addHandler(handler)
    return handler


def _launched_remotely() -> tuple[bool, str, str]:
    """(on a cluster node?, where: "node HOST (ray job REF)", what to do about a missing path)."""
    launcher = os.environ.get("CHESTLAB_LAUNCHER", "")
    remote = launcher not in ("", "local")
    where = f"node {socket.gethostname()}"
    if remote:
        return (
            True,
            f"{where} ({launcher} job {os.environ.get('CHESTLAB_LAUNCHER_REF', '?')})",
            SHARED_FS_HINT,
        )
    return False, where, "restore it there, or queue the run again with the new path"


SHARED_FS_HINT = "mount the shared filesystem at the same path on every node"


def check_workspace(workspace: Any = None) -> None:
    """On a cluster node, the workspace (run folders, checkpoints) must be the shared one:
    checked before anything creates an empty local folder in its place."""
    remote, where, hint = _launched_remotely()
    path = str(workspace or os.environ.get("CHESTLAB_WORKSPACE") or "")
    if remote and path and not os.path.isdir(path):
        raise DataError(f"workspace {path} not found on {where}: {hint}")


def check_paths(record: RunRecord, workspace: Any = None) -> None:
    """The run's dataset (and weights file, and on a cluster node the workspace) must be
    visible here; fail at once naming the path and the node, not deep in the loader."""
    check_workspace(workspace)
    _, where, hint = _launched_remotely()
    paths = [("dataset", record.config.get("data"))]
    pretrained = str(record.config.get("pretrained") or "")
    if pretrained not in ("", "none", "imagenet"):
        paths.append(("pretrained weights", pretrained))
    for what, path in paths:
        if path and not os.path.exists(path):
            raise DataError(f"{what} {path} not found on {where}: {hint}")


def start_here(store: RunStore, config: Any) -> RunRecord:
    """A new run of ``config`` (a RunConfig), claimed at once by this process on this host:
    what a foreground ``train`` runs with ``execute_run`` (no worker ever sees it queued
    for longer than the two statements take)."""
    rec = store.create_run(config.to_dict(), name=config.display_name, tags=config.tags)
    return store.claim_run(rec.id, socket.gethostname())


def execute_run(
    store: RunStore,
    record: RunRecord,
    *,
    device: str | None = None,
    workspace: Any = None,
    extra_reporters: tuple[Reporter, ...] = (),
    log_file: bool = False,
) -> dict[str, Any]:
    """Train ``record`` to its end; returns the CLI's result dict
    ``{"run_id", "status", "best", "test"}``. Re-raises after recording a failure."""
    if record.status.finished:  # cancelled while its job waited for cluster resources
        log.info("run %s is %s: not training it", record.id, record.status.value)
        return {"run_id": record.id, "status": record.status.value, "best": record.best, "test": record.test}
    try:
        check_paths(record, workspace)  # before run_dir() creates a workspace where there is none
    except ChestLabError as exc:
        log.error("run %s failed: %s", record.id, exc)
        store.finish(record.id, "failed", error=str(exc))
        raise
    from core.config import RunConfig
    from core.train.loop import fit

    folder = run_dir(record.id, workspace)
    folder.mkdir(parents=True, exist_ok=True)
    handler = _log_to_file(folder / "log.txt") if log_file else None
    logging.getLogger().setLevel(logging.INFO)
    store_reporter = StoreReporter(store, record.id)
    reporter = MultiReporter(FolderReporter(folder), store_reporter, *extra_reporters)
    try:
        config = RunConfig.from_dict(record.config)
        if device:
            config = config.replace(device=device)
        atomic_write_json(folder / "config.json", config.to_dict())
        store.mark_started(
            record.id,
            os.getpid(),
            socket.gethostname(),
            config.device,
            # The launcher's own identity: the worker may not have recorded it yet.
            os.environ.get("CHESTLAB_LAUNCHER") or record.launcher or "foreground",
            os.environ.get("CHESTLAB_LAUNCHER_REF") or record.launcher_ref or str(os.getpid()),
        )
        log.info(
            "run %s (%s) starting%s on %s",
            record.id,
            record.name,
            " (resume)" if record.resume else "",
            config.device,
        )
        result = fit(config, folder, reporter, resume=record.resume, workspace=workspace)
        reporter.finish(result.status, result.best, result.test)
        log.info("run %s %s; best %s", record.id, result.status, result.best)
        return {"run_id": record.id, "status": result.status, "best": result.best, "test": result.test}
    except ChestLabError as exc:
        log.error("run %s failed: %s", record.id, exc)
        reporter.finish("failed", {}, {}, str(exc))
        raise
    except KeyboardInterrupt:
        reporter.finish("cancelled", {}, {}, "interrupted")
        raise
    except BaseException as exc:
        tb = traceback.format_exc()
        log.error("run %s failed:\n%s", record.id, tb)
        reporter.finish("failed", {}, {}, f"{type(exc).__name__}: {exc}")
        raise
    finally:
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            handler.close()
        sys.stdout.flush()
