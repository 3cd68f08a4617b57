"""``csv``: a manifest CSV with a path column and a label column (``path`` and ``label``
unless options name others), optional split and patient columns, any other columns kept as
metadata. The delimiter is sniffed (``,`` ``;`` tab); paths are relative to the CSV's folder
or absolute. PATH is the CSV itself or a folder holding exactly one such manifest. Lesion
boxes come from the ``boxes`` option or a ``boxes.csv`` beside the manifest
(``path,x,y,width,height[,label]``, paths relative to that CSV)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from core.data.formats import DatasetFormat, register_format
from core.data.formats.common import (
    SkipLog,
    check_rows,
    clean_label,
    csv_columns,
    normalise_split,
    read_table,
    require_columns,
    resolve_path,
)
from core.data.formats.report import finish
from core.data.index import INDEX_COLUMNS, ScanReport
from core.errors import DataError
from core.progress import ProgressFn

_TABLE_SUFFIXES = (".csv", ".tsv")
BOX_FIELDS = ("x", "y", "width", "height")
_FLAGS = {
    "path_column": "--path-column",
    "label_column": "--label-column",
    "split_column": "--split-column",
    "patient_column": "--patient-column",
}


def _columns(options: dict[str, Any]) -> dict[str, str]:
    defaults = {
        "path_column": "path",
        "label_column": "label",
        "split_column": "split",
        "patient_column": "patient_id",
    }
    return {k: str(options.get(k, v)) for k, v in defaults.items()}


def _is_boxes_table(cols: list[str]) -> bool:
    return all(c in cols for c in BOX_FIELDS)


def find_manifest(root: Path, options: dict[str, Any]) -> tuple[Path | None, list[Path]]:
    """The manifest at ``root`` (the CSV itself, or the only CSV in the folder with the path
    and label columns that is not a boxes table) and every CSV looked at."""
    if root.is_file():
        return (root if root.suffix.lower() in _TABLE_SUFFIXES else None), [root]
    cols = _columns(options)
    tables = sorted(
        p
        for p in root.iterdir()
        if p.is_file() and p.suffix.lower() in _TABLE_SUFFIXES and not p.name.startswith(".")
    )
    boxes = options.get("boxes")
    matches = []
    for t in tables:
        header = csv_columns(t)
        if cols["path_column"] in header and cols["label_column"] in header and not _is_boxes_table(header):
            if boxes is None or os.path.abspath(t) != boxes:
                matches.append(t)
    if len(matches) > 1:
        names = ", ".join(p.name for p in matches)
        raise DataError(f"{root}: several manifest CSVs ({names}); pass the one to use as PATH")
    return (matches[0] if matches else None), tables


def detect(root: Path, options: dict[str, Any]) -> bool:
    """A folder with one manifest CSV, or any CSV file given as PATH (reading it then says
    which column it lacks)."""
    try:
        manifest, _ = find_manifest(root, options)
    except DataError:
        return True  # several manifests: reading it explains the choice to make
    return manifest is not None


def read(root: Path, options: dict[str, Any], progress: ProgressFn) -> ScanReport:
    cols = _columns(options)
    manifest = _manifest(root, options, cols)
    table = read_table(manifest, str_columns=cols.values())
    required = {cols["path_column"]: "--path-column", cols["label_column"]: "--label-column"}
    required |= {cols[k]: _FLAGS[k] for k in ("split_column", "patient_column") if k in options}
    require_columns(manifest, table, required)

    rows = _index_rows(table, cols, manifest.parent)
    # A row naming a missing file becomes valid when the file appears, which changes its
    # folder's mtime: the folders of all named files are sources of the cache.
    sources = {os.fspath(manifest), *(os.path.dirname(p) for p in set(rows["path"]) if p)}
    skips = SkipLog()
    rows = check_rows(rows, manifest, skips)
    boxes, box_source = _boxes(manifest, options)
    if box_source:
        sources.add(os.fspath(box_source))
    warnings = _split_warnings(table, cols)
    return finish(root, "csv", options, rows, skips, progress, sources=sources, boxes=boxes, warnings=warnings, headers=True)  # fmt: skip


def _manifest(root: Path, options: dict[str, Any], cols: dict[str, str]) -> Path:
    manifest, tables = find_manifest(root, options)
    if manifest is not None:
        return manifest
    if len(tables) == 1:  # the only CSV there: reading it says which column it lacks
        return tables[0]
    names = ", ".join(p.name for p in tables) or "none"
    wanted = f"{cols['path_column']!r} and {cols['label_column']!r}"
    raise DataError(f"{root}: no manifest CSV with columns {wanted} (CSV files: {names})")


def _index_rows(table: pd.DataFrame, cols: dict[str, str], base: Path) -> pd.DataFrame:
    """INDEX_COLUMNS + metadata from the manifest's columns."""
    raw_paths = table[cols["path_column"]].map(clean_label)
    out = pd.DataFrame(
        {
            "path": raw_paths.map(lambda p: resolve_path(base, p) if p else ""),
            "label": table[cols["label_column"]].map(clean_label),
            "split": table[cols["split_column"]].map(normalise_split)
            if cols["split_column"] in table.columns
            else "",
            "patient_id": table[cols["patient_column"]].map(clean_label)
            if cols["patient_column"] in table.columns
            else "",
        },
        index=table.index,
    )
    used = {cols[k] for k in cols}
    meta = table[[c for c in table.columns if c not in used and c not in INDEX_COLUMNS]]
    return pd.concat([out, meta], axis=1)


def _split_warnings(table: pd.DataFrame, cols: dict[str, str]) -> list[str]:
    col = cols["split_column"]
    if col not in table.columns:
        return []
    raw = table[col].map(clean_label)
    odd = raw[(raw != "") & (raw.map(normalise_split) == "")]
    if odd.empty:
        return []
    values = ", ".join(sorted(set(odd))[:5])
    return [f"{len(odd)} rows have a {col!r} value that is not train/val/test ({values}); they have no split"]


def _boxes(manifest: Path, options: dict[str, Any]) -> tuple[pd.DataFrame | None, Path | None]:
    if options.get("boxes"):
        path = Path(options["boxes"])
    else:
        path = manifest.parent / "boxes.csv"
        if not path.is_file() or path == manifest:
            return None, None
    return read_boxes(path), path


def read_boxes(path: Path) -> pd.DataFrame:
    """A boxes table (``path,x,y,width,height[,label]``), paths made absolute."""
    table = read_table(path, str_columns=("path", "label"))
    require_columns(path, table, {c: "" for c in ("path", *BOX_FIELDS)})
    table = table.assign(path=table["path"].map(lambda p: resolve_path(path.parent, clean_label(p))))
    return table[[c for c in ("path", *BOX_FIELDS, "label") if c in table.columns]]


register_format(
    DatasetFormat(
        name="csv",
        description="a manifest CSV with path and label columns (others kept as metadata)",
        looks_for="a CSV with 'path' and 'label' columns",
        detect=detect,
        read=read,
        options=("path_column", "label_column", "split_column", "patient_column", "boxes"),
    )
)
