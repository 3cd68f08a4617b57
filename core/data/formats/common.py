"""Helpers every dataset format shares: walking folders, reading CSVs, normalising split
names and labels, collecting skipped files, checking the rows a table names. Building the
report from candidate rows is in ``report.py``."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pandas as pd

from core.data.index import Skipped
from core.errors import DataError

SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test",
}  # fmt: skip
DICOM_EXTENSIONS = frozenset({".dcm", ".dicom", ".dic", ".ima"})
SKIP_LIMIT = 20  # more skipped entries of one kind than this collapse into one summary entry
_SKIP_DIRS = {"__MACOSX", "__pycache__"}


def normalise_split(value: object) -> str:
    """``train``/``val``/``test`` for the usual spellings (any case), else ``""``."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return SPLIT_ALIASES.get(str(value).strip().lower(), "")


def is_split_name(name: str) -> bool:
    return normalise_split(name) != ""


def clean_label(value: object) -> str:
    """A label as written, without surrounding whitespace; ``""`` for blanks."""
    if value is None or (isinstance(value, float) and value != value) or value is pd.NA:
        return ""
    return str(value).strip()


# ---------------------------------------------------------------- walking folders


def walk(root: Path) -> Iterator[tuple[Path, list[str]]]:
    """``(folder, file names)`` under ``root``, sorted, following symlinked folders once,
    without hidden folders/files or macOS archive debris."""
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:  # a symlink loop or a second link to one folder
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _SKIP_DIRS)
        yield Path(dirpath), sorted(f for f in filenames if not f.startswith("."))


def find_paths(root: Path, match: Callable[[str], bool], max_depth: int, *, dirs: bool = False) -> list[Path]:
    """Files (or folders) under ``root`` up to ``max_depth`` levels down whose name
    ``match``-es, shallowest first."""
    found: list[str] = []
    level = [os.fspath(root)]
    for _ in range(max_depth + 1):
        nxt: list[str] = []
        for d in level:
            try:
                entries = list(os.scandir(d))
            except OSError:
                continue
            for e in entries:
                if e.name.startswith(".") or e.name in _SKIP_DIRS:
                    continue
                is_dir = e.is_dir()
                if is_dir == dirs and match(e.name):
                    found.append(e.path)
                if is_dir:
                    nxt.append(e.path)
        level = sorted(nxt)
    # Shallowest first, then by name: the order a person reading the tree would pick.
    return [Path(p) for p in sorted(found, key=lambda p: (p.count(os.sep), p))]


def resolve_path(base: Path, raw: str) -> str:
    """An absolute path for ``raw`` as written in a CSV: relative to ``base`` unless
    absolute; Windows separators accepted when the path does not exist as written."""
    p = os.path.normpath(os.path.join(base, os.path.expanduser(raw)))
    if "\\" in raw and not os.path.exists(p):
        p = os.path.normpath(os.path.join(base, raw.replace("\\", "/")))
    return p


# ---------------------------------------------------------------- CSV tables


def _first_line(path: Path) -> str:
    with path.open("rb") as f:
        raw = f.read(65536)
    text = raw.decode("utf-8-sig", errors="replace")
    return text.splitlines()[0] if text else ""


def sniff_delimiter(first_line: str) -> str:
    """The header line's delimiter among ``,`` ``;`` and tab (the most frequent wins)."""
    counts = {d: first_line.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def csv_columns(path: Path) -> list[str]:
    """The header of a CSV, cheaply (for detection); ``[]`` if it cannot be read."""
    try:
        first = _first_line(path)
    except OSError:
        return []
    import csv

    try:
        row = next(csv.reader([first], delimiter=sniff_delimiter(first)))
    except (csv.Error, StopIteration):
        return []
    return [c.strip() for c in row]


def read_table(path: Path, str_columns: Iterable[str] = ()) -> pd.DataFrame:
    """A CSV with its delimiter sniffed, column names stripped, unnamed (blank-header)
    columns dropped, ``str_columns`` read as text. Any failure is one DataError."""
    try:
        sep = sniff_delimiter(_first_line(path))
        df = _read_csv(path, sep, str_columns)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: cannot read as CSV ({reason})") from None
    df.columns = [str(c).strip() for c in df.columns]
    unnamed = [c for c in df.columns if c == "" or c.startswith("Unnamed: ")]
    return df.drop(columns=unnamed)


def _read_csv(path: Path, sep: str, str_columns: Iterable[str]) -> pd.DataFrame:
    dtype = {c: str for c in str_columns}
    try:
        return pd.read_csv(path, sep=sep, encoding="utf-8-sig", dtype=dtype, low_memory=False)
    except UnicodeDecodeError:
        # Spreadsheet exports from Windows are often cp1252/latin-1; latin-1 reads any bytes.
        return pd.read_csv(path, sep=sep, encoding="latin-1", dtype=dtype, low_memory=False)


def require_columns(path: Path, df: pd.DataFrame, wanted: dict[str, str]) -> None:
    """DataError naming the CSV, the first missing column and the columns it has.
    ``wanted`` maps a column name to the flag that chooses it."""
    for col, flag in wanted.items():
        if col not in df.columns:
            have = ", ".join(map(str, df.columns)) or "(none)"
            hint = f"; choose another with {flag}" if flag else ""
            raise DataError(f"{path}: no column {col!r} (columns: {have}){hint}")


# ---------------------------------------------------------------- skipped files


class SkipLog:
    """Skipped files grouped by kind, so that a kind with thousands of entries (26k label
    rows naming absent DICOMs) becomes one summary line instead of noise."""

    def __init__(self) -> None:
        self._groups: dict[str, list[Skipped]] = {}
        self._where: dict[str, str] = {}

    def add(
        self,
        path: str | os.PathLike[str],
        reason: str,
        *,
        kind: str | None = None,
        where: str | os.PathLike[str] | None = None,
    ) -> None:
        kind = kind or reason
        self._groups.setdefault(kind, []).append(Skipped(os.fspath(path), reason))
        self._where.setdefault(kind, os.fspath(where if where is not None else path))

    def __len__(self) -> int:
        return sum(len(v) for v in self._groups.values())

    def entries(self, limit: int = SKIP_LIMIT) -> list[Skipped]:
        out: list[Skipped] = []
        for kind, items in self._groups.items():
            if len(items) > limit:
                first = items[0]
                out.append(
                    Skipped(self._where[kind], f"{len(items)} {kind} (first: {first.path}: {first.reason})")
                )
            else:
                out.extend(items)
        return out


def check_rows(df: pd.DataFrame, table: Path, skips: SkipLog) -> pd.DataFrame:
    """Keep rows whose ``path`` names an existing image file, once. Rows are skipped with
    their row number in ``table`` (1-based, header excluded) for: a blank path or label, a
    file that is not a 2-D image (``.nii.gz`` volumes, PDFs), a missing file, and a file an
    earlier row already named (the first row wins, so the index has one row per file)."""
    from core.data.images import looks_like_image

    name = table.name
    keep: list[bool] = []
    first_row: dict[str, int] = {}
    for n, (path, label) in enumerate(zip(df["path"].tolist(), df["label"].tolist(), strict=True), 1):
        why, kind = _row_problem(path, label, n, name, first_row)
        if why is None and not looks_like_image(path):
            why, kind = (
                f"not an image file (row {n} of {name})",
                f"rows of {name} name files that are not images",
            )
        if why is None:
            first_row[path] = n
        else:
            skips.add(path or table, why, kind=kind, where=table)
        keep.append(why is None)
    return df[keep]


def skip_unlisted(
    folders: Iterable[str | os.PathLike[str]], listed: Iterable[str], table: Path, skips: SkipLog
) -> None:
    """Report the image files in ``folders`` that no row of ``table`` names: they are on
    disk but have no label, so a count of the files would differ from the index."""
    from core.data.images import IMAGE_EXTENSIONS

    named = set(listed)
    for folder in sorted({os.fspath(f) for f in folders}):
        try:
            entries = sorted(e.path for e in os.scandir(folder) if e.is_file() and not e.name.startswith("."))
        except OSError:
            continue
        kind = f"image files in {os.path.basename(folder)}/ have no row in {table.name}"
        for path in entries:
            if path not in named and os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS:
                skips.add(path, f"no row in {table.name}", kind=kind, where=folder)


def _row_problem(
    path: str, label: str, n: int, name: str, first_row: dict[str, int]
) -> tuple[str | None, str]:
    if not path:
        return f"row {n} of {name}: empty file name", f"rows of {name} have no file name"
    if not label:
        return f"row {n} of {name}: empty label", f"rows of {name} have an empty label"
    suffix = non_image_suffix(path)
    if suffix:
        return (
            f"not a 2-D image file ({suffix}; row {n} of {name})",
            f"rows of {name} name files that are not 2-D images",
        )
    if path in first_row:
        m = first_row[path]
        return (
            f"row {n} of {name} names the same file as row {m}; only row {m} is kept",
            f"rows of {name} repeat a file an earlier row names",
        )
    if not os.path.isfile(path):
        return f"file not found (row {n} of {name})", f"rows of {name} name files that do not exist"
    return None, ""


def non_image_suffix(path: str) -> str:
    """The extension of a file that is certainly no 2-D image (``.nii.gz``, ``.pdf``), else ``""``."""
    from core.data.images import NON_IMAGE_EXTENSIONS

    name = os.path.basename(path).lower()
    for compound in (".nii.gz", ".tar.gz"):
        if name.endswith(compound):
            return compound
    suffix = os.path.splitext(name)[1]
    return (
        suffix
        if suffix in NON_IMAGE_EXTENSIONS or suffix in {".nii", ".mha", ".mhd", ".nrrd", ".mp4"}
        else ""
    )
