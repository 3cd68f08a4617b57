"""The datasets a workspace knows (``datasets.json``): name -> path, format, options.

The Explore page and the CLI register datasets here so that a user picks them by name; the
demo dataset is written and registered on the first start of the app.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.errors import ConfigError, DataError, NotFoundError
from core.workspace import workspace_root

DEMO_NAME = "demo"


@dataclass(frozen=True)
class DatasetRef:
    name: str
    path: str
    format: str = "auto"
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _catalog_path(workspace: str | os.PathLike[str] | None) -> Path:
    return workspace_root(workspace) / "datasets.json"


def _read(workspace: str | os.PathLike[str] | None) -> dict[str, dict[str, Any]]:
    path = _catalog_path(workspace)
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); fix or delete it") from None


def _write(data: dict[str, dict[str, Any]], workspace: str | os.PathLike[str] | None) -> None:
    from core.fileio import atomic_write_json

    atomic_write_json(_catalog_path(workspace), data)


def _lock(workspace: str | os.PathLike[str] | None):
    from filelock import FileLock

    return FileLock(str(workspace_root(workspace) / ".datasets.lock"), timeout=30)


def list_datasets(workspace: str | os.PathLike[str] | None = None) -> list[DatasetRef]:
    return [DatasetRef(name=k, **v) for k, v in _read(workspace).items()]


def get_dataset(name: str, workspace: str | os.PathLike[str] | None = None) -> DatasetRef:
    data = _read(workspace)
    if name not in data:
        have = ", ".join(data) or "none"
        raise NotFoundError(f"no dataset named {name!r} in this workspace (registered: {have})")
    return DatasetRef(name=name, **data[name])


def default_name(path: str) -> str:
    base = Path(path).name or "dataset"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", base).strip("-") or "dataset"


def register_dataset(
    path: str | os.PathLike[str],
    format: str = "auto",
    options: dict[str, Any] | None = None,
    name: str | None = None,
    workspace: str | os.PathLike[str] | None = None,
) -> DatasetRef:
    """Add (or update) a dataset by name. The path is stored absolute."""
    path = os.path.abspath(os.fspath(path))
    if not os.path.exists(path):
        raise NotFoundError(f"{path}: no such file or folder")
    name = name or default_name(path)
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}$", name):
        raise ConfigError(f"dataset name {name!r}: use 1-64 letters, digits, spaces, '.', '_' or '-'")
    ref = DatasetRef(name=name, path=path, format=format, options=dict(options or {}))
    with _lock(workspace):
        data = _read(workspace)
        entry = ref.to_dict()
        entry.pop("name")
        data[name] = entry
        _write(data, workspace)
    return ref


def remove_dataset(name: str, workspace: str | os.PathLike[str] | None = None) -> None:
    with _lock(workspace):
        data = _read(workspace)
        data.pop(name, None)
        _write(data, workspace)


def find_dataset(path: str, workspace: str | os.PathLike[str] | None = None) -> DatasetRef | None:
    path = os.path.abspath(path)
    return next((d for d in list_datasets(workspace) if d.path == path), None)


def ensure_demo(workspace: str | os.PathLike[str] | None = None, seed: int = 0) -> DatasetRef:
    """Write the demo dataset into ``<workspace>/demo`` (if not there) and register it."""
    from core.data.demo import demo_info, write_demo

    root = workspace_root(workspace) / DEMO_NAME
    with _lock(workspace):
        if demo_info(root) is None:
            write_demo(root, seed=seed)
    return register_dataset(root, "auto", {}, DEMO_NAME, workspace)
