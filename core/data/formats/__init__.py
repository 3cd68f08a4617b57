"""Dataset formats: each reads one kind of dataset into the index (``core.data.index``).

A format is a ``DatasetFormat``: ``detect(root, options) -> bool`` (cheap: file names, CSV
headers, a short walk) and ``read(root, options, progress) -> ScanReport``. ``auto``
detection tries the formats in registration order, most specific first: rsna, coronahack,
cohen (by their CSV file names and columns), csv (a manifest with path and label columns),
imagefolder (class folders of non-DICOM images), dicom (DICOM files, any names).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.data.index import ScanReport
from core.progress import ProgressFn
from core.registry import Registry

DetectFn = Callable[[Path, dict[str, Any]], bool]
ReadFn = Callable[[Path, dict[str, Any], ProgressFn], ScanReport]


@dataclass(frozen=True)
class DatasetFormat:
    name: str
    description: str
    looks_for: str  # what detection looks for, for the "no supported dataset" message
    detect: DetectFn
    read: ReadFn
    options: tuple[str, ...] = ()


FORMATS: Registry[DatasetFormat] = Registry("dataset format")


def register_format(fmt: DatasetFormat) -> DatasetFormat:
    return FORMATS.add(fmt.name, fmt)


def get_format(name: str) -> DatasetFormat:
    return FORMATS.get(name)


def list_formats() -> list[str]:
    return FORMATS.names()


# Registration order is the detection order: most specific first.
FORMAT_MODULES = ("rsna", "coronahack", "cohen", "manifest", "imagefolder", "dicomfolder")
for _module in FORMAT_MODULES:
    importlib.import_module(f"core.data.formats.{_module}")
