"""``rsna``: the RSNA Pneumonia Detection Challenge: ``stage_2_train_labels.csv``
(``patientId, x, y, width, height, Target``; one row per box, one box-less row per negative)
with a folder of ``<patientId>.dcm`` (``stage_2_train_images/``, else any folder of DICOMs
below the CSV's folder), and optionally ``stage_2_detailed_class_info.csv``.

One index row per patient whose DICOM exists: label ``Lung Opacity`` (Target 1) or
``No Lung Opacity`` (Target 0), metadata ``Target`` and the detailed ``class`` ("Normal",
"No Lung Opacity / Not Normal", "Lung Opacity"), then the DICOM header fields. One box row
per positive label row, in pixels of the 1024x1024 image. Patients without a DICOM are
skipped as one summary entry (the full labels file names 26,684 patients; a local copy of
the images often holds a subset)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from core.data.formats import DatasetFormat, register_format
from core.data.formats.common import (
    SkipLog,
    clean_label,
    csv_columns,
    find_paths,
    read_table,
    require_columns,
    walk,
)
from core.data.formats.report import finish
from core.data.index import ScanReport
from core.errors import DataError
from core.progress import ProgressFn

PATIENT, TARGET = "patientId", "Target"
POSITIVE, NEGATIVE = "Lung Opacity", "No Lung Opacity"
BOX_FIELDS = ("x", "y", "width", "height")


def _labels_name(name: str) -> bool:
    return name.lower().endswith(".csv") and "train_labels" in name.lower()


def _is_labels(path: Path) -> bool:
    if not _labels_name(path.name):
        return False
    cols = csv_columns(path)
    return PATIENT in cols and TARGET in cols


def find_labels(root: Path) -> Path | None:
    if root.is_file():
        return root if _is_labels(root) else None
    # In PATH itself: a parent folder of several datasets must not pass for this one.
    found = [p for p in find_paths(root, _labels_name, max_depth=0) if _is_labels(p)]
    return found[0] if found else None


def detect(root: Path, options: dict[str, Any]) -> bool:
    return find_labels(root) is not None


def find_image_folder(bases: list[Path]) -> Path | None:
    """``*train_images*`` beside or below the labels, else the first folder holding
    ``.dcm`` files."""
    for base in bases:
        named = find_paths(base, lambda name: "train_images" in name.lower(), max_depth=2, dirs=True)
        if named:
            return named[0]
    for base in bases:
        for folder, files in walk(base):
            if any(f.lower().endswith(".dcm") for f in files):
                return folder
    return None


def _dicoms_by_patient(folder: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for d, files in walk(folder):
        for f in files:
            stem, ext = os.path.splitext(f)
            if ext.lower() in (".dcm", ".dicom"):
                out.setdefault(stem, os.path.join(d, f))
    return out


def read(root: Path, options: dict[str, Any], progress: ProgressFn) -> ScanReport:
    csv = find_labels(root)
    if csv is None:
        raise DataError(
            f"{root}: no RSNA labels CSV (stage_2_train_labels.csv with patientId and Target) found"
        )
    labels = read_table(csv, str_columns=(PATIENT,))
    require_columns(csv, labels, {PATIENT: "", TARGET: "", **{c: "" for c in BOX_FIELDS}})
    labels = labels.assign(
        **{PATIENT: labels[PATIENT].map(clean_label), TARGET: pd.to_numeric(labels[TARGET], errors="coerce")}
    )
    skips = SkipLog()
    bad = labels[(labels[PATIENT] == "") | ~labels[TARGET].isin([0, 1])]
    for n in bad.index:
        skips.add(
            csv,
            f"row {n + 1}: no patientId or a Target that is not 0/1",
            kind=f"rows of {csv.name} have no patientId or a bad Target",
            where=csv,
        )
    labels = labels.drop(index=bad.index)

    bases = [csv.parent] + ([root] if root.is_dir() and root != csv.parent else [])
    folder = find_image_folder(bases)
    if folder is None:
        raise DataError(
            f"{csv}: no folder of DICOM files found under {csv.parent} (expected stage_2_train_images/)"
        )
    files = _dicoms_by_patient(folder)
    patients = labels.groupby(PATIENT, sort=False)[TARGET].max().astype(int)
    present = patients[patients.index.isin(files.keys())]
    _skip_missing(patients, files, folder, csv, skips)
    _skip_unlabelled(files, patients, folder, csv, skips)

    rows = pd.DataFrame(
        {
            "path": [files[p] for p in present.index],
            "label": [POSITIVE if t == 1 else NEGATIVE for t in present],
            "split": "",
            "patient_id": present.index.astype(str),
            TARGET: present.to_numpy(),
            "class": _detailed_class(csv, present.index),
        }
    )
    boxes = _boxes(labels, files)
    sources = [csv, folder] + ([p] if (p := _class_info_path(csv)) else [])
    return finish(root, "rsna", options, rows, skips, progress, sources=sources, boxes=boxes, headers=True)


def _skip_missing(
    patients: pd.Series, files: dict[str, str], folder: Path, csv: Path, skips: SkipLog
) -> None:
    kind = f"patients in {csv.name} have no DICOM file in {folder.name}/"
    for pid in patients.index[~patients.index.isin(files.keys())]:
        skips.add(os.path.join(folder, f"{pid}.dcm"), "no DICOM file", kind=kind, where=csv)


def _skip_unlabelled(
    files: dict[str, str], patients: pd.Series, folder: Path, csv: Path, skips: SkipLog
) -> None:
    labelled = set(patients.index)
    for pid, path in files.items():
        if pid not in labelled:
            skips.add(
                path,
                f"no row in {csv.name}",
                kind=f"DICOM files in {folder.name}/ have no row in {csv.name}",
                where=folder,
            )


def _class_info_path(csv: Path) -> Path | None:
    found = sorted(csv.parent.glob("*detailed_class_info*.csv"))
    return found[0] if found else None


def _detailed_class(csv: Path, patients: pd.Index) -> pd.Series:
    """The detailed class per patient (first row), or missing where the file has none."""
    path = _class_info_path(csv)
    if path is None:
        return pd.Series(pd.NA, index=range(len(patients)), dtype="str")
    info = read_table(path, str_columns=(PATIENT, "class"))
    require_columns(path, info, {PATIENT: "", "class": ""})
    first = (
        info.assign(**{PATIENT: info[PATIENT].map(clean_label)})
        .drop_duplicates(PATIENT)
        .set_index(PATIENT)["class"]
    )
    return pd.Series(first.reindex(patients).to_numpy(), dtype="str")


def _boxes(labels: pd.DataFrame, files: dict[str, str]) -> pd.DataFrame:
    pos = labels[(labels[TARGET] == 1) & labels[PATIENT].isin(files.keys())]
    pos = pos.dropna(subset=list(BOX_FIELDS))
    return pd.DataFrame(
        {
            "path": [files[p] for p in pos[PATIENT]],
            **{c: pd.to_numeric(pos[c], errors="coerce").to_numpy() for c in BOX_FIELDS},
            "label": POSITIVE,
        }
    )


register_format(
    DatasetFormat(
        name="rsna",
        description="RSNA Pneumonia Detection: stage_2_train_labels.csv with a folder of <patientId>.dcm",
        looks_for="stage_2_train_labels.csv",
        detect=detect,
        read=read,
    )
)
