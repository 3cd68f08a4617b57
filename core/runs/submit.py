"""What the CLI and the pages do with runs: submit, cancel, resume, delete, read the log.

Submitting only writes a queued run (and its folder's ``config.json``) and makes sure a
worker is there to start it; nothing here trains.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from core.errors import ConfigError
from core.runs import run_dir, run_log_path, tail_file
from core.runs.store import RunRecord, RunStore

Workspace = str | os.PathLike[str] | None

__all__ = ["cancel_run", "delete_run", "resume_run", "run_dir", "submit_run", "tail_log"]


def _store(workspace: Workspace, store: RunStore | None) -> RunStore:
    return store or RunStore(workspace=workspace)


def _config_dict(config: Any, validate: bool) -> dict[str, Any]:
    if hasattr(config, "to_dict"):
        return config.to_dict()
    if not isinstance(config, dict):
        raise ConfigError(f"a run config is a JSON object, got {type(config).__name__}")
    if validate:
        from core.config import RunConfig

        return RunConfig.from_dict(config).to_dict()
    return dict(config)


def submit_run(
    config: Any,
    workspace: Workspace = None,
    start_worker: bool = True,
    store: RunStore | None = None,
    validate: bool = True,
) -> RunRecord:
    """Queue a run (a ``RunConfig`` or its dict, checked through ``RunConfig`` unless
    ``validate`` is False) and start the workspace's worker if none runs."""
    from core.fileio import atomic_write_json

    cfg = _config_dict(config, validate)
    st = _store(workspace, store)
    rec = st.create_run(cfg, name=str(cfg.get("name") or ""), tags=cfg.get("tags") or ())
    atomic_write_json(run_dir(rec.id, workspace) / "config.json", cfg)
    if start_worker:
        from core.runs.worker import ensure_worker

        ensure_worker(workspace)
    return rec


def cancel_run(run_id: str, workspace: Workspace = None, store: RunStore | None = None) -> RunRecord:
    """A queued run is cancelled at once; a running one within seconds (by the worker)."""
    return _store(workspace, store).request_cancel(run_id)


def resume_run(
    run_id: str, workspace: Workspace = None, start_worker: bool = True, store: RunStore | None = None
) -> RunRecord:
    """Queue a failed or cancelled run again; it continues from its last checkpoint."""
    rec = _store(workspace, store).requeue_for_resume(run_id)
    if start_worker:
        from core.runs.worker import ensure_worker

        ensure_worker(workspace)
    return rec


def delete_run(run_id: str, workspace: Workspace = None, store: RunStore | None = None) -> None:
    """Delete a run that is not running: its row, metrics and folder."""
    _store(workspace, store).delete_run(run_id)
    shutil.rmtree(run_dir(run_id, workspace), ignore_errors=True)


def tail_log(run_id: str, n_lines: int = 50, workspace: Workspace = None) -> str:
    """The last lines of the run's training log ("" before it starts)."""
    return tail_file(run_log_path(run_id, workspace), n_lines)
