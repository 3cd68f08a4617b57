"""The uint8 image cache that training reads.

Every image is decoded once (DICOM windowing, 16-bit scaling, EXIF orientation and all),
resized to ``size`` x ``size`` and stored in a memmap in the workspace, keyed by the set of
files, their sizes and mtimes, and the size. Epochs then read rows of that array, never the
original files. An image that cannot be decoded is reported, its row marked bad, and the
build goes on.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.progress import ProgressFn, no_progress
from core.workspace import cache_dir

CACHE_VERSION = 1


@dataclass
class ImageCache:
    array: np.ndarray  # (N, size, size) uint8, memmap
    paths: list[str]
    ok: np.ndarray  # (N,) bool: False where the image could not be decoded
    failures: list[dict[str, str]] = field(default_factory=list)  # [{"path", "reason"}]
    size: int = 0
    path: str = ""

    def rows(self, paths: Sequence[str]) -> np.ndarray:
        where = {p: i for i, p in enumerate(self.paths)}
        return np.array([where[p] for p in paths], dtype=np.int64)


def cache_key(paths: Sequence[str], size: int) -> str:
    h = hashlib.sha1(f"v{CACHE_VERSION}:{size}".encode())
    for p in sorted(set(paths)):
        try:
            st = os.stat(p)
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}\0missing\n".encode())
    return h.hexdigest()[:20]


def _decode(path: str, size: int) -> tuple[np.ndarray | None, str]:
    from core.data.images import ImageError, read_gray, resize_gray

    try:
        return resize_gray(read_gray(path), size), ""
    except ImageError as exc:
        return None, exc.reason
    except Exception as exc:  # a decoder bug must not stop a 30,000-image build
        return None, f"{type(exc).__name__}: {exc}"


def build_cache(
    paths: Sequence[str],
    size: int,
    *,
    workspace: str | os.PathLike[str] | None = None,
    progress: ProgressFn = no_progress,
    workers: int | None = None,
) -> ImageCache:
    """Return the cache for ``paths`` at ``size``, building it if needed (reused otherwise)."""
    from filelock import FileLock

    uniq = sorted(set(paths))
    key = cache_key(uniq, size)
    d = cache_dir("images", workspace)
    npy, meta_path = d / f"{key}.npy", d / f"{key}.json"
    with FileLock(str(d / f"{key}.lock"), timeout=3600):
        if npy.exists() and meta_path.exists():
            return _open(npy, meta_path)
        tmp = d / f".{key}.{os.getpid()}.npy"
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(uniq), size, size))
        ok = np.zeros(len(uniq), dtype=bool)
        failures: list[dict[str, str]] = []
        workers = workers or min(8, (os.cpu_count() or 2) * 2)
        progress(0, len(uniq), "decoding images")
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for i, (img, reason) in enumerate(pool.map(lambda p: _decode(p, size), uniq, chunksize=8)):
                if img is None:
                    failures.append({"path": uniq[i], "reason": reason})
                else:
                    arr[i] = img
                    ok[i] = True
                if i % 32 == 0 or i == len(uniq) - 1:
                    progress(i + 1, len(uniq), "decoding images")
        arr.flush()
        del arr
        os.replace(tmp, npy)
        from core.fileio import atomic_write_json

        atomic_write_json(meta_path, {"version": CACHE_VERSION, "size": size, "paths": uniq, "ok": ok.tolist(),
                                      "failures": failures})
        return _open(npy, meta_path)


def _open(npy: Path, meta_path: Path) -> ImageCache:
    meta = json.loads(meta_path.read_text())
    arr = np.load(npy, mmap_mode="r")
    return ImageCache(array=arr, paths=meta["paths"], ok=np.array(meta["ok"], dtype=bool), failures=meta["failures"],
                      size=meta["size"], path=str(npy))


def streaming_mean_std(array: np.ndarray, rows: np.ndarray, chunk: int = 256) -> tuple[float, float]:
    """Mean and standard deviation (0..1 scale) of the pixels of ``rows``, by streaming sums
    in float64 so a 30,000-image cache never needs to fit in memory as floats."""
    n = 0
    s = 0.0
    ss = 0.0
    for i in range(0, len(rows), chunk):
        block = np.asarray(array[np.sort(rows[i : i + chunk])], dtype=np.float64) / 255.0
        n += block.size
        s += block.sum()
        ss += np.square(block).sum()
    if n == 0:
        return 0.5, 0.25
    mean = s / n
    return float(mean), float(np.sqrt(max(ss / n - mean * mean, 1e-12)))
