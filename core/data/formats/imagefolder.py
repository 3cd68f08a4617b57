"""``imagefolder``: class folders of images, with or without split folders above them, at
any depth (``chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}``, ``input/train/nCoV``,
``CT_COVID/``). The class is the image's folder name; the split is the folder above it when
that is a split name (``train``, ``val``/``valid``/``validation``, ``test``, any case).
Other files (CSVs, READMEs, split lists) are ignored; folders without images are no class."""

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
    is_split_name,
    normalise_split,
    walk,
)
from core.data.formats.report import finish
from core.data.index import INDEX_COLUMNS, ScanReport
from core.errors import DataError
from core.progress import ProgressFn


def folder_label(root: Path, folder: Path) -> tuple[str, str, str | None]:
    """``(label, split, why_not)`` for images in ``folder``: ``why_not`` is set when the
    folder cannot be a class (the dataset root itself, or a bare split folder)."""
    if folder == root:
        return "", "", "image directly in the dataset folder, not in a class folder"
    name = clean_label(folder.name)
    if is_split_name(name):
        return "", "", f"image in split folder {folder.name!r} without a class folder"
    split = normalise_split(folder.parent.name) if folder.parent != root else ""
    return name, split, None


def _plain_image(name: str) -> bool:
    from core.data.images import IMAGE_EXTENSIONS

    suffix = os.path.splitext(name)[1].lower()
    return suffix in IMAGE_EXTENSIONS and suffix not in DICOM_EXTENSIONS


def detect(root: Path, options: dict[str, Any]) -> bool:
    """Images that are not DICOM in some folder below the root (a tree of DICOMs only is
    left to the ``dicom`` format, which adds folder labels the same way)."""
    if not root.is_dir():
        return False
    return any(folder != root and any(_plain_image(f) for f in files) for folder, files in walk(root))


def read(root: Path, options: dict[str, Any], progress: ProgressFn) -> ScanReport:
    from core.data.images import looks_like_image

    if not root.is_dir():
        raise DataError(f"{root}: not a folder (the imagefolder format reads class folders)")
    skips = SkipLog()
    rows: list[tuple[str, str, str, str]] = []
    sources: list[Path] = []
    for folder, files in walk(root):
        sources.append(folder)
        images = [p for p in (os.path.join(folder, f) for f in files) if looks_like_image(p)]
        if not images:
            continue
        label, split, why = folder_label(root, folder)
        for p in images:
            if why:
                skips.add(p, why, kind=f"images not in a class folder ({why.split(',')[0]})", where=folder)
            else:
                rows.append((p, label, split, ""))
    df = pd.DataFrame(rows, columns=list(INDEX_COLUMNS))
    # DICOMs among the images bring their header fields (and PatientID) as columns.
    return finish(root, "imagefolder", options, df, skips, progress, sources=sources, headers=True)


register_format(
    DatasetFormat(
        name="imagefolder",
        description="class folders of images, optionally under train/val/test folders",
        looks_for="class folders of PNG/JPEG/BMP/TIFF images",
        detect=detect,
        read=read,
    )
)
