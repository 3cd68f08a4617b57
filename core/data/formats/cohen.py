"""``cohen``: the COVID-19 image data collection (Cohen et al.): ``metadata.csv`` naming
each image by ``folder`` + ``filename``. The label is ``finding`` as written (releases
differ: ``COVID-19`` and ``SARS`` in 2020, ``Pneumonia/Viral/COVID-19`` later), the patient
``patientid``; every other column is kept. Rows naming a missing file or a volume
(``volumes/*.nii.gz``) are skipped. Two rows naming one file (the collection lists a few
images under two patient ids) keep the first row only, so the index has one row per image
file and its counts equal the files on disk; the dropped row is in ``skipped``."""

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
    read_table,
    require_columns,
    skip_unlisted,
)
from core.data.formats.report import finish
from core.data.index import ScanReport
from core.errors import DataError
from core.progress import ProgressFn

CSV_NAME = "metadata.csv"
LABEL, FILE, FOLDER, PATIENT = "finding", "filename", "folder", "patientid"


def _is_cohen(path: Path) -> bool:
    if path.name.lower() != CSV_NAME or not path.is_file():
        return False
    cols = csv_columns(path)
    return LABEL in cols and FILE in cols


def find_csv(root: Path) -> Path | None:
    if root.is_file():
        return root if _is_cohen(root) else None
    # Only PATH itself: a parent folder of several datasets must not pass for one of them.
    return root / CSV_NAME if _is_cohen(root / CSV_NAME) else None


def detect(root: Path, options: dict[str, Any]) -> bool:
    return find_csv(root) is not None


def read(root: Path, options: dict[str, Any], progress: ProgressFn) -> ScanReport:
    csv = find_csv(root)
    if csv is None:
        raise DataError(f"{root}: no {CSV_NAME} with {LABEL!r} and {FILE!r} columns found")
    table = read_table(csv, str_columns=(LABEL, FILE, FOLDER, PATIENT))
    require_columns(csv, table, {LABEL: "", FILE: ""})
    folder = (
        table[FOLDER].map(clean_label) if FOLDER in table.columns else pd.Series("images", index=table.index)
    )
    files = table[FILE].map(clean_label)
    paths = [
        os.path.normpath(os.path.join(csv.parent, d or "images", f)) if f else ""
        for d, f in zip(folder, files, strict=True)
    ]
    rows = pd.DataFrame(
        {
            "path": paths,
            "label": table[LABEL].map(clean_label),
            "split": "",
            "patient_id": table[PATIENT].map(clean_label) if PATIENT in table.columns else "",
        },
        index=table.index,
    )
    meta = table.drop(columns=[c for c in (LABEL, FILE, FOLDER, PATIENT) if c in table.columns])
    sources = {os.fspath(csv), *(os.path.dirname(p) for p in set(paths) if p)}
    skips = SkipLog()
    rows = check_rows(pd.concat([rows, meta], axis=1), csv, skips)
    skip_unlisted({os.path.dirname(p) for p in rows["path"]}, rows["path"], csv, skips)
    return finish(root, "cohen", options, rows, skips, progress, sources=sources)


register_format(
    DatasetFormat(
        name="cohen",
        description="the COVID-19 image data collection metadata.csv (folder + filename, finding)",
        looks_for="metadata.csv with 'finding' and 'filename' columns",
        detect=detect,
        read=read,
    )
)
