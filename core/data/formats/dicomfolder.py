"""``dicom``: a folder of DICOM files, any names (``.dcm``, no extension, UID names), nested
or not, with or without the 128-byte preamble. Header fields become columns; the label is
the parent folder name (the split the folder above it, as for ``imagefolder``) unless a
labels CSV (option ``labels``) gives it by ``path``, ``filename`` or ``PatientID``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from core.data.formats import DatasetFormat, register_format
from core.data.formats.common import (
    DICOM_EXTENSIONS,
    SkipLog,
    clean_label,
    normalise_split,
    read_table,
    require_columns,
    resolve_path,
    walk,
)
from core.data.formats.imagefolder import folder_label
from core.data.formats.report import assemble, inspect_files
from core.data.index import INDEX_COLUMNS, ScanReport
from core.errors import DataError
from core.progress import ProgressFn

# Files with these extensions are never probed for DICOM content (beside images' own list).
_NOT_DICOM = frozenset(".rst .tgz .7z .ini .cfg .log .h5 .hdf5 .pkl .avi .doc .docx .sh .mha .nrrd".split())
_PATIENT_KEYS = ("PatientID", "patient_id", "patientId", "patientid")


def _candidate(path: str) -> bool:
    from core.data.dicom import is_dicom
    from core.data.images import IMAGE_EXTENSIONS, NON_IMAGE_EXTENSIONS

    name = os.path.basename(path)
    suffix = os.path.splitext(name)[1].lower()
    if suffix in DICOM_EXTENSIONS:
        return True  # a broken .dcm is still meant as DICOM: it is skipped with its reason
    if (
        suffix in IMAGE_EXTENSIONS
        or suffix in NON_IMAGE_EXTENSIONS
        or suffix in _NOT_DICOM
        or name == "DICOMDIR"
    ):
        return False
    return is_dicom(path)


def _candidates(root: Path) -> tuple[list[str], list[Path]]:
    if root.is_file():
        return ([os.fspath(root)] if _candidate(os.fspath(root)) else []), []
    paths: list[str] = []
    folders: list[Path] = []
    for folder, files in walk(root):
        folders.append(folder)
        paths.extend(p for p in (os.path.join(folder, f) for f in files) if _candidate(p))
    return paths, folders


def detect(root: Path, options: dict[str, Any]) -> bool:
    if root.is_file():
        return _candidate(os.fspath(root))
    return any(_candidate(os.path.join(folder, f)) for folder, files in walk(root) for f in files)


def read(root: Path, options: dict[str, Any], progress: ProgressFn) -> ScanReport:
    paths, sources = _candidates(root)
    skips = SkipLog()
    if not paths:
        raise DataError(f"{root}: no DICOM files found")
    base = root if root.is_dir() else root.parent
    results = inspect_files(paths, progress, headers=True)
    if options.get("labels"):
        rows, keep, extra_sources = _labels_from_csv(
            Path(options["labels"]), base, paths, results, options, skips
        )
        sources += extra_sources
    else:
        rows, keep = _labels_from_folders(base, paths, skips)
    results = [r for r, k in zip(results, keep, strict=True) if k]
    return assemble(root, "dicom", options, rows, results, skips, sources=sources)


def _labels_from_folders(base: Path, paths: list[str], skips: SkipLog) -> tuple[pd.DataFrame, list[bool]]:
    rows, keep = [], []
    for p in paths:
        folder = Path(p).parent
        if folder == base:  # a flat folder of DICOMs is one class named after the folder
            label, split, why = clean_label(base.name), "", None
        else:
            label, split, why = folder_label(base, folder)
        if why:
            skips.add(p, why, kind="DICOM files not in a class folder", where=folder)
        else:
            rows.append((p, label, split, ""))
        keep.append(why is None)
    return pd.DataFrame(rows, columns=list(INDEX_COLUMNS)), keep


def _labels_from_csv(
    csv: Path, base: Path, paths: list[str], results: list, options: dict[str, Any], skips: SkipLog
) -> tuple[pd.DataFrame, list[bool], list[str]]:
    """Labels, splits and metadata columns from the labels CSV, matched on its ``path``,
    ``filename`` or patient id column (the first present, in that order)."""
    label_col = options.get("label_column", "label")
    split_col = options.get("split_column", "split")
    by_key, key_col = _read_labels(csv, base, label_col, "split_column" in options and split_col)
    meta_cols = [c for c in by_key.columns if c not in {label_col, split_col}]
    rows, keep = [], []
    for p, (_, fields, _) in zip(paths, results, strict=True):
        key = _file_key(key_col, p, fields)
        row = by_key.loc[key] if key in by_key.index else None
        label = clean_label(row[label_col]) if row is not None else ""
        if row is None or not label:
            what = f"no row for {key_col} {key!r}" if row is None else "an empty label"
            skips.add(
                p,
                f"{what} in {csv.name}",
                kind=f"DICOM files have {what.split(' for ')[0]} in {csv.name}",
                where=csv,
            )
        else:
            split = normalise_split(row[split_col]) if split_col in by_key.columns else ""
            rows.append(
                {
                    "path": p,
                    "label": label,
                    "split": split,
                    "patient_id": "",
                    **{c: row[c] for c in meta_cols},
                }
            )
        keep.append(row is not None and bool(label))
    return pd.DataFrame(rows, columns=[*INDEX_COLUMNS, *meta_cols]), keep, [os.fspath(csv)]


def _read_labels(csv: Path, base: Path, label_col: str, split_col: str | bool) -> tuple[pd.DataFrame, str]:
    """The labels table indexed by its match key (first row per key) and the key column."""
    table = read_table(csv, str_columns=("path", "filename", label_col, str(split_col), *_PATIENT_KEYS))
    require_columns(csv, table, {label_col: "--label-column"})
    if split_col:
        require_columns(csv, table, {str(split_col): "--split-column"})
    key_col = next((c for c in ("path", "filename", *_PATIENT_KEYS) if c in table.columns), None)
    if key_col is None:
        have = ", ".join(map(str, table.columns))
        raise DataError(
            f"{csv}: no column to match files by (need path, filename or PatientID; columns: {have})"
        )
    keys = table[key_col].map(clean_label)
    if key_col == "path":
        keys = keys.map(lambda raw: _match_path(raw, csv.parent, base))
    table = table.assign(_key=keys).drop(columns=[key_col])
    table = table[table["_key"] != ""].drop_duplicates("_key")
    return table.set_index("_key"), key_col


def _file_key(key_col: str, path: str, fields: dict[str, Any] | None) -> str:
    if key_col == "path":
        return path
    if key_col == "filename":
        return os.path.basename(path)
    return clean_label((fields or {}).get("PatientID"))


def _match_path(raw: str, csv_dir: Path, base: Path) -> str:
    if not raw:
        return ""
    p = resolve_path(csv_dir, raw)
    return p if os.path.exists(p) else resolve_path(base, raw)


register_format(
    DatasetFormat(
        name="dicom",
        description="a folder of DICOM files; header fields become columns, labels from folders or a CSV",
        looks_for="DICOM files (any names, nested)",
        detect=detect,
        read=read,
        options=("labels", "label_column", "split_column"),
    )
)
