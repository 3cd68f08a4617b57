"""``coronahack``: the Kaggle CoronaHack Chest X-Ray dataset: ``Chest_xray_Corona_Metadata.csv``
(``X_ray_image_name, Label, Dataset_type, Label_2_Virus_category, Label_1_Virus_category``
after an unnamed index column) with its ``train/`` and ``test/`` image folders, found at
any depth below the CSV's folder (Kaggle nests them one folder down). The split comes from
``Dataset_type`` (``TRAIN``/``TEST``), the label from ``Label`` as written (``Pnemonia``)."""

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
    find_paths,
    normalise_split,
    read_table,
    require_columns,
    skip_unlisted,
)
from core.data.formats.report import finish
from core.data.index import ScanReport
from core.errors import DataError
from core.progress import ProgressFn

CSV_NAME = "chest_xray_corona_metadata.csv"
NAME, LABEL, SPLIT = "X_ray_image_name", "Label", "Dataset_type"


def find_csv(root: Path) -> Path | None:
    if root.is_file():
        return root if root.name.lower() == CSV_NAME else None
    # In PATH itself (Kaggle's archive has it at the top, the images nested below).
    found = find_paths(root, lambda name: name.lower() == CSV_NAME, max_depth=0)
    return found[0] if found else None


def detect(root: Path, options: dict[str, Any]) -> bool:
    return find_csv(root) is not None


def split_folders(bases: list[Path]) -> dict[str, Path]:
    """The shallowest ``train``/``test`` (and ``val``) folder below the first base that has
    any."""
    for base in bases:
        found: dict[str, Path] = {}
        for d in find_paths(base, lambda name: normalise_split(name) != "", max_depth=4, dirs=True):
            found.setdefault(normalise_split(d.name), d)
        if found:
            return found
    return {}


def read(root: Path, options: dict[str, Any], progress: ProgressFn) -> ScanReport:
    csv = find_csv(root)
    if csv is None:
        raise DataError(f"{root}: no {CSV_NAME} found")
    table = read_table(csv, str_columns=(NAME, LABEL, SPLIT))
    require_columns(csv, table, {NAME: "", LABEL: "", SPLIT: ""})
    bases = [csv.parent] + ([root] if root.is_dir() and root != csv.parent else [])
    folders = split_folders(bases)
    if not folders:
        raise DataError(
            f"{csv}: no train/ or test/ image folder found under {csv.parent} "
            f"(the {len(table)} images it lists belong in train/ and test/ folders beside or below it)"
        )
    split = table[SPLIT].map(normalise_split)
    names = table[NAME].map(clean_label)
    paths = [_image_path(folders, s, n) if n else "" for s, n in zip(split, names, strict=True)]
    rows = pd.DataFrame(
        {"path": paths, "label": table[LABEL].map(clean_label), "split": split, "patient_id": ""},
        index=table.index,
    )
    meta = table.drop(columns=[NAME, LABEL, SPLIT])
    rows = pd.concat([rows, meta], axis=1)
    skips = SkipLog()
    rows = check_rows(rows, csv, skips)
    skip_unlisted(folders.values(), rows["path"], csv, skips)
    sources = [csv, *folders.values()]
    return finish(root, "coronahack", options, rows, skips, progress, sources=sources)


def _image_path(folders: dict[str, Path], split: str, name: str) -> str:
    if split in folders:
        return os.path.join(folders[split], name)
    # An unknown Dataset_type: take the file from whichever split folder has it.
    for folder in folders.values():
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    return os.path.join(next(iter(folders.values())), name)


register_format(
    DatasetFormat(
        name="coronahack",
        description="CoronaHack Chest_xray_Corona_Metadata.csv with its train/ and test/ folders",
        looks_for="Chest_xray_Corona_Metadata.csv",
        detect=detect,
        read=read,
    )
)
