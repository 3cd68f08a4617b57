"""Where ChestLab keeps a user's data: ``./workspace`` or ``$CHESTLAB_WORKSPACE``.

Layout::

    workspace/
      chestlab.db        run store (SQLite)
      datasets.json      registered datasets (path, format, options)
      tasks/NAME.json    saved tasks
      demo/              the built-in demo dataset
      cache/index/       cached dataset indexes
      cache/images/      uint8 image caches for training
      cache/thumbs/      thumbnails
      runs/RUN_ID/       config.json, log.txt, checkpoints/
"""
from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "CHESTLAB_WORKSPACE"


def workspace_root(path: str | os.PathLike[str] | None = None) -> Path:
    """The workspace folder (created if missing), as an absolute path."""
    root = Path(path or os.environ.get(ENV_VAR) or "workspace").expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    return root


def cache_dir(kind: str, workspace: str | os.PathLike[str] | None = None) -> Path:
    d = workspace_root(workspace) / "cache" / kind
    d.mkdir(parents=True, exist_ok=True)
    return d
