"""Background runs: the run store (``store``), the worker that starts queued runs
(``worker``), how it starts them (``launcher``) and the helpers the CLI and the pages call
(``submit``).

A run's folder is ``<workspace>/runs/<run id>/`` with ``config.json``, ``log.txt`` (the
training process's stdout and stderr) and ``checkpoints/``.
"""

from __future__ import annotations

import os
from pathlib import Path

LOG_NAME = "log.txt"


def run_dir(run_id: str, workspace: str | os.PathLike[str] | None = None) -> Path:
    from core.workspace import workspace_root

    return workspace_root(workspace) / "runs" / run_id


def run_log_path(run_id: str, workspace: str | os.PathLike[str] | None = None) -> Path:
    return run_dir(run_id, workspace) / LOG_NAME


def tail_file(path: str | os.PathLike[str], n_lines: int = 50, max_bytes: int = 256_000) -> str:
    """The last ``n_lines`` lines of a text file (read from its end; "" if missing)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except FileNotFoundError:
        return ""
    lines = data.decode("utf-8", errors="replace").splitlines()
    if size > max_bytes:
        lines = lines[1:]  # the first line read is probably cut
    return "\n".join(lines[-n_lines:]) if n_lines > 0 else ""
