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


def write_tiny_dataset(root: Path, n_per_class: int = 24, size: int = 48, classes=("normal", "opacity"),
                       seed: int = 0) -> Path:
    """A small imagefolder dataset (train/val/test x classes) of gray PNGs where every
    non-first class has a bright blob at a class-specific place: learnable in seconds."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    for split, n in (("train", n_per_class), ("val", max(4, n_per_class // 3)), ("test", max(4, n_per_class // 3))):
        for ci, cls in enumerate(classes):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.normal(90, 12, (size, size))
                if ci:
                    cx = size * (0.25 + 0.5 * ((ci - 1) % 2)) + rng.normal(0, 2)
                    cy = size * (0.3 + 0.4 * ((ci - 1) // 2)) + rng.normal(0, 2)
                    img += 90 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * (size / 10) ** 2))
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(d / f"{split}_{cls}_{i:03d}.png")
    return root


@pytest.fixture
def tiny_dataset(tmp_path) -> Path:
    return write_tiny_dataset(tmp_path / "tiny")
