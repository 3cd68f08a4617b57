"""Fixtures shared by every test: a temporary workspace, paths to the real sample data."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CHESTLAB_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> Path:
    """A fresh, empty workspace for this test (``$CHESTLAB_WORKSPACE`` points at it)."""
    ws = tmp_path / "workspace"
    ws.mkdir()
    monkeypatch.setenv("CHESTLAB_WORKSPACE", str(ws))
    return ws


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data`` (real samples in their original formats); skips when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real sample data not present at {SHARED_DATA}")
    return SHARED_DATA
