"""The map cache: a computed CAM is never computed twice for the same question.

A map is identified by (run, checkpoint file and its modification time, image content,
method, target layers, target class, Score-CAM's k and channel criterion, input size).
Images are identified by a hash of their decoded pixels, so a dataset file and the same
picture uploaded share their maps, and an edited file does not. Maps are kept in memory
(a bounded LRU) and on disk in ``<workspace>/cache/cam/`` as float16 ``.npy`` files with a
small JSON sidecar (the seconds the map took, shown on the page). Changing the opacity,
the colormap or the boxes never touches the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from core.fileio import atomic_write, atomic_write_json

DEFAULT_MAX_ITEMS = 256  # ~25 MB of float16 224 x 224 maps


@dataclass(frozen=True)
class MapKey:
    run_id: str
    checkpoint: str
    checkpoint_mtime: float
    image: str  # image_hash() of the decoded pixels
    method: str
    layers: str  # comma-joined target layer names
    target: int
    top_k: int  # 0 = every channel, or not a Score-CAM
    criterion: str
    img_size: int

    def digest(self) -> str:
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class CachedMap:
    cam: np.ndarray  # float32 (S, S)
    seconds: float


def image_hash(image: np.ndarray) -> str:
    """A short content hash of a decoded image (shape and pixels)."""
    arr = np.ascontiguousarray(image)
    h = hashlib.sha1(f"{arr.dtype}{arr.shape}".encode())
    h.update(arr.data)
    return h.hexdigest()[:20]


class MapCache:
    """Thread-safe two-level cache; ``directory`` None keeps maps in memory only."""

    def __init__(
        self, directory: str | os.PathLike[str] | None = None, max_items: int = DEFAULT_MAX_ITEMS
    ) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.max_items = max_items
        self._memory: OrderedDict[str, CachedMap] = OrderedDict()
        self._lock = threading.Lock()

    def _paths(self, digest: str) -> tuple[Path, Path]:
        assert self.directory is not None
        folder = self.directory / digest[:2]
        return folder / f"{digest}.npy", folder / f"{digest}.json"

    def get(self, key: MapKey) -> CachedMap | None:
        digest = key.digest()
        with self._lock:
            hit = self._memory.get(digest)
            if hit is not None:
                self._memory.move_to_end(digest)
                return hit
        if self.directory is None:
            return None
        npy, meta = self._paths(digest)
        try:
            cam = np.load(npy, allow_pickle=False).astype(np.float32)
            seconds = float(json.loads(meta.read_text()).get("seconds", 0.0))
        except (OSError, ValueError):
            return None  # absent, or half-written by a process that died: recompute
        hit = CachedMap(cam, seconds)
        self._remember(digest, hit)
        return hit

    def put(self, key: MapKey, cam: np.ndarray, seconds: float) -> None:
        digest = key.digest()
        hit = CachedMap(np.asarray(cam, dtype=np.float32), float(seconds))
        self._remember(digest, hit)
        if self.directory is None:
            return
        npy, meta = self._paths(digest)
        atomic_write_json(meta, {"seconds": hit.seconds, "key": asdict(key)})
        half = np.asarray(cam, dtype=np.float16)
        atomic_write(npy, lambda f: np.save(f, half, allow_pickle=False))

    def _remember(self, digest: str, hit: CachedMap) -> None:
        with self._lock:
            self._memory[digest] = hit
            self._memory.move_to_end(digest)
            while len(self._memory) > self.max_items:
                self._memory.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._memory)


_DEFAULT: dict[str, MapCache] = {}
_DEFAULT_LOCK = threading.Lock()


def default_cache(workspace: str | os.PathLike[str] | None = None) -> MapCache:
    """The shared map cache of a workspace (one per process)."""
    from core.workspace import cache_dir

    directory = cache_dir("cam", workspace)
    with _DEFAULT_LOCK:
        key = os.fspath(directory)
        if key not in _DEFAULT:
            _DEFAULT[key] = MapCache(directory)
        return _DEFAULT[key]


__all__ = ["CachedMap", "MapCache", "MapKey", "default_cache", "image_hash"]
