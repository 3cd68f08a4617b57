"""The dataset index: every format read into one table, and its cache.

``scan(path)`` detects the format (or takes the one named), reads the dataset into a
``ScanReport`` (the index table, the lesion boxes, what was skipped and why) and caches it in
the workspace. The cache is reused while every file and folder the scan read keeps its size
and modification time, so adding, removing, editing or touching any of them rescans.

The index has one row per readable image: ``path`` (absolute), ``label`` (class name as
written), ``split`` (``train``/``val``/``test`` or ``""``), ``patient_id`` (``""`` if
unknown), then the source's metadata columns (CSV columns, DICOM header fields), then the
file columns from ``inspect_image``. Formats live in ``core.data.formats``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from core.errors import ConfigError, DataError
from core.progress import ProgressFn, no_progress

log = logging.getLogger(__name__)

INDEX_COLUMNS = ("path", "label", "split", "patient_id")
FILE_COLUMNS = ("file_format", "file_mode", "file_bit_depth", "file_width", "file_height", "file_bytes")
SPLITS = ("train", "val", "test")
CACHE_VERSION = 1
# Options that name files: stored absolute so the cache key does not depend on the cwd.
PATH_OPTIONS = ("boxes", "labels")


@dataclass
class Skipped:
    path: str
    reason: str


@dataclass
class ScanReport:
    root: str
    format: str
    options: dict[str, Any]
    index: pd.DataFrame
    boxes: pd.DataFrame
    skipped: list[Skipped] = field(default_factory=list)
    # Not part of the JSON contract: notes for a person (one class only, boxes dropped, ...).
    warnings: list[str] = field(default_factory=list)
    # Every file and folder the scan depended on; the cache is valid while none changes.
    sources: list[str] = field(default_factory=list, repr=False)
    from_cache: bool = False

    @property
    def classes(self) -> dict[str, int]:
        counts = self.index["label"].value_counts()
        return {str(k): int(counts[k]) for k in sorted(counts.index)}

    @property
    def splits(self) -> dict[str, dict[str, int]]:
        """Counts per class in each split; rows without a split are not in any."""
        out: dict[str, dict[str, int]] = {}
        given = self.index[self.index["split"] != ""]
        names = [s for s in SPLITS if s in set(given["split"])] + sorted(set(given["split"]) - set(SPLITS))
        for split in names:
            counts = given.loc[given["split"] == split, "label"].value_counts()
            out[split] = {str(k): int(counts[k]) for k in sorted(counts.index)}
        return out

    @property
    def metadata_columns(self) -> list[str]:
        fixed = set(INDEX_COLUMNS) | set(FILE_COLUMNS)
        return [str(c) for c in self.index.columns if c not in fixed]

    def to_json(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "format": self.format,
            "n_images": len(self.index),
            "classes": self.classes,
            "splits": self.splits,
            "metadata_columns": self.metadata_columns,
            "n_boxes": len(self.boxes),
            "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped],
        }


def detect_format(path: str | os.PathLike[str], options: dict[str, Any] | None = None) -> str:
    """The first registered format that recognises ``path`` (formats are tried in
    registration order: rsna, coronahack, cohen, csv, imagefolder, dicom)."""
    from core.data.formats import FORMATS

    root = _existing(path)
    opts = normalise_options(options)
    for name, fmt in FORMATS.items():
        if fmt.detect(root, opts):
            return name
    looked = "; ".join(f"{name}: {fmt.looks_for}" for name, fmt in FORMATS.items())
    raise DataError(f"no supported dataset found at {root} (looked for {looked})")


def scan(
    path: str | os.PathLike[str],
    format: str = "auto",
    *,
    options: dict[str, Any] | None = None,
    workspace: str | os.PathLike[str] | None = None,
    progress: ProgressFn = no_progress,
    use_cache: bool = True,
) -> ScanReport:
    """Read the dataset at ``path`` into a ``ScanReport``, from the cache when nothing
    changed. ``use_cache=False`` rescans (and refreshes the cache). Raises ``DataError``
    for a dataset that cannot be read at all; bad files are skipped with a reason."""
    from core.data.formats import FORMATS

    root = _existing(path)
    opts = normalise_options(options)
    cache = IndexCache(workspace)
    # Keyed on the format as asked ("auto" too), so a cached scan skips detection as well.
    key = cache.key(root, format, opts)
    if use_cache:
        cached = cache.load(key)
        if cached is not None:
            progress(len(cached.index), len(cached.index), "cached index")
            return cached
    name = detect_format(root, opts) if format == "auto" else format
    fmt = FORMATS.get(name)
    unknown = sorted(set(opts) - set(fmt.options))
    if unknown:
        used = ", ".join(fmt.options) or "none"
        raise ConfigError(f"option {unknown[0]!r} does not apply to the {name} format (its options: {used})")
    report = fmt.read(root, opts, progress)
    # The root's own listing too: a dataset file added beside it may change what "auto" finds.
    report.sources = sorted(set(report.sources) | {os.fspath(root)})
    cache.save(key, report)
    return report


def normalise_options(options: dict[str, Any] | None) -> dict[str, Any]:
    """Options without unset values; file options made absolute."""
    out: dict[str, Any] = {}
    for k, v in sorted((options or {}).items()):
        if v is None or v == "":
            continue
        out[k] = os.path.abspath(os.path.expanduser(os.fspath(v))) if k in PATH_OPTIONS else v
    return out


def _existing(path: str | os.PathLike[str]) -> Path:
    root = Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
    if not root.exists():
        raise DataError(f"{path}: no such file or folder")
    return root


# ---------------------------------------------------------------- the cache


class IndexCache:
    """Cached scans in ``cache/index/``: per key a JSON card naming three parquet files
    (index, boxes, the size and mtime of every source). The card is written last and
    atomically, so a reader sees a complete old or a complete new entry, never a mix."""

    def __init__(self, workspace: str | os.PathLike[str] | None = None) -> None:
        self._workspace = workspace
        self._dir: Path | None = None

    @property
    def dir(self) -> Path:
        if self._dir is None:
            from core.workspace import cache_dir

            self._dir = cache_dir("index", self._workspace)
        return self._dir

    @staticmethod
    def key(root: Path, fmt: str, options: dict[str, Any]) -> str:
        raw = json.dumps([CACHE_VERSION, os.fspath(root), fmt, options], sort_keys=True, default=str)
        return hashlib.sha256(raw.encode()).hexdigest()[:24]

    def load(self, key: str) -> ScanReport | None:
        card_path = self.dir / f"{key}.json"
        try:
            card = json.loads(card_path.read_text())
            if card.get("version") != CACHE_VERSION:
                return None
            stamps = pd.read_parquet(self.dir / card["sources"])
            if not _unchanged(stamps):
                return None
            index = pd.read_parquet(self.dir / card["index"])
            boxes = pd.read_parquet(self.dir / card["boxes"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError) as exc:  # a damaged entry is a miss, not an error
            log.warning("ignoring damaged index cache %s: %s", card_path, exc)
            return None
        return ScanReport(
            root=card["root"], format=card["format"], options=card["options"], index=index, boxes=boxes,
            skipped=[Skipped(**s) for s in card["skipped"]], warnings=card["warnings"],
            sources=stamps["path"].tolist(), from_cache=True,
        )  # fmt: skip

    def save(self, key: str, report: ScanReport) -> None:
        from core.fileio import atomic_write, atomic_write_json

        try:
            stamps = _stamps(report.sources)
            tag = f"{key}-{uuid.uuid4().hex[:8]}"
            names = {
                "index": f"{tag}.index.parquet",
                "boxes": f"{tag}.boxes.parquet",
                "sources": f"{tag}.sources.parquet",
            }
            for frame, kind in ((report.index, "index"), (report.boxes, "boxes"), (stamps, "sources")):
                atomic_write(self.dir / names[kind], lambda f, frame=frame: frame.to_parquet(f, index=False))
            old = self._files_of(key)
            card = {
                "version": CACHE_VERSION, "root": report.root, "format": report.format, "options": report.options,
                "skipped": [{"path": s.path, "reason": s.reason} for s in report.skipped],
                "warnings": report.warnings, **names,
            }  # fmt: skip
            atomic_write_json(self.dir / f"{key}.json", card)
        except (OSError, ValueError) as exc:  # a read-only workspace slows the next scan, no more
            log.warning("could not cache the index of %s: %s", report.root, exc)
            return
        for name in old - set(names.values()):
            (self.dir / name).unlink(missing_ok=True)

    def _files_of(self, key: str) -> set[str]:
        try:
            card = json.loads((self.dir / f"{key}.json").read_text())
            return {card[k] for k in ("index", "boxes", "sources")}
        except (OSError, ValueError, KeyError):
            return set()


def _stat(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return -1, -1
    return st.st_size, st.st_mtime_ns


def _stamps(paths: list[str]) -> pd.DataFrame:
    sizes, mtimes = zip(*(_stat(p) for p in paths), strict=True) if paths else ((), ())
    return pd.DataFrame(
        {
            "path": pd.Series(paths, dtype="str"),
            "size": pd.Series(sizes, dtype="int64"),
            "mtime_ns": pd.Series(mtimes, dtype="int64"),
        }
    )


def _unchanged(stamps: pd.DataFrame) -> bool:
    for path, size, mtime in zip(
        stamps["path"].tolist(), stamps["size"].tolist(), stamps["mtime_ns"].tolist(), strict=True
    ):
        if _stat(path) != (size, mtime):
            return False
    return True
