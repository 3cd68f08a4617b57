"""From candidate rows to a ``ScanReport``: inspect every image (and read DICOM headers),
skip the files that fail with their reason, add the file columns, give each metadata
column one dtype, keep the boxes of indexed images."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from core.data.formats.common import SkipLog, clean_label
from core.data.index import FILE_COLUMNS, INDEX_COLUMNS, ScanReport
from core.errors import DataError
from core.progress import ProgressFn

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- inspecting images

FileResult = tuple[Any, dict[str, Any] | None, str | None]  # (ImageInfo | None, header fields, error)


def inspect_files(paths: list[str], progress: ProgressFn, *, headers: bool = False) -> list[FileResult]:
    """``inspect_image`` on every path (and the DICOM header fields when ``headers``),
    never raising for a bad file: its reason comes back instead.

    Serial on purpose: on 2 cores a thread pool of 2-8 did not speed up 2,000 PNGs, 2,000
    JPEGs or 1,000 DICOMs (inspection is mostly Python code holding the GIL), and 4 threads
    were up to 2x slower on JPEGs."""
    total = len(paths)
    step = max(1, total // 200)
    progress(0, total, "reading image headers")
    out: list[FileResult] = []
    for i, path in enumerate(paths, 1):
        out.append(_inspect_one(path, headers))
        if i % step == 0 or i == total:
            progress(i, total, "reading image headers")
    return out


def _inspect_one(path: str, headers: bool) -> FileResult:
    from core.data.dicom import header_fields, read_header
    from core.data.images import ImageError, inspect_image

    try:
        info = inspect_image(path)
    except ImageError as exc:
        return None, None, exc.reason
    except OSError as exc:
        return None, None, exc.strerror or type(exc).__name__
    except Exception as exc:  # a reader bug must not end a 30k-file scan; keep the reason
        log.debug("inspect_image failed on %s", path, exc_info=True)
        return None, None, f"cannot read ({type(exc).__name__}: {exc})"
    fields = None
    if headers and is_dicom_info(info):
        try:
            fields = header_fields(read_header(path))
        except Exception as exc:  # the pixels passed inspection; a header quirk costs only columns
            log.debug("header_fields failed on %s: %s", path, exc)
    return info, fields, None


def is_dicom_info(info: Any) -> bool:
    return getattr(info, "format", "") == "DICOM"


def file_columns(infos: list[Any]) -> pd.DataFrame:
    """The FILE_COLUMNS of ``inspect_image`` results, one row each."""
    return pd.DataFrame(
        {
            "file_format": pd.Series([i.format for i in infos], dtype="str"),
            "file_mode": pd.Series([i.mode for i in infos], dtype="str"),
            "file_bit_depth": pd.Series([i.bit_depth for i in infos], dtype="Int64"),
            "file_width": pd.Series([i.width for i in infos], dtype="Int64"),
            "file_height": pd.Series([i.height for i in infos], dtype="Int64"),
            "file_bytes": pd.Series([i.n_bytes for i in infos], dtype="Int64"),
        },
        columns=list(FILE_COLUMNS),
    )


# ---------------------------------------------------------------- building the report

BOX_COLUMNS = ("path", "x", "y", "width", "height", "label")


def empty_boxes() -> pd.DataFrame:
    return pd.DataFrame(
        {c: pd.Series(dtype="str" if c in ("path", "label") else "float64") for c in BOX_COLUMNS}
    )


def finish(
    root: Path,
    fmt: str,
    options: dict[str, Any],
    rows: pd.DataFrame,
    skips: SkipLog,
    progress: ProgressFn,
    *,
    sources: Iterable[str | os.PathLike[str]] = (),
    boxes: pd.DataFrame | None = None,
    headers: bool = False,
    warnings: list[str] | None = None,
) -> ScanReport:
    """Inspect every candidate row's image, skip those that fail with their reason, and
    build the report: index columns, metadata, DICOM header fields (``headers``), file
    columns."""
    rows = rows.reset_index(drop=True)
    results = inspect_files(rows["path"].tolist(), progress, headers=headers)
    return assemble(root, fmt, options, rows, results, skips, sources=sources, boxes=boxes, warnings=warnings)


def assemble(
    root: Path,
    fmt: str,
    options: dict[str, Any],
    rows: pd.DataFrame,
    results: list[FileResult],
    skips: SkipLog,
    *,
    sources: Iterable[str | os.PathLike[str]] = (),
    boxes: pd.DataFrame | None = None,
    warnings: list[str] | None = None,
) -> ScanReport:
    """The report from candidate rows and their ``inspect_files`` results (same order)."""
    rows = rows.reset_index(drop=True)
    ok = [err is None for _, _, err in results]
    for path, (_, _, err) in zip(rows["path"].tolist(), results, strict=True):
        if err is not None:
            skips.add(path, err, kind="files are not readable images", where=root)
    good = rows[ok].reset_index(drop=True)
    infos = [info for info, _, err in results if err is None]
    header_rows = [fields or {} for _, fields, err in results if err is None]
    if good.empty:
        raise DataError(_nothing_found(root, fmt, skips))

    meta = good.drop(columns=list(INDEX_COLUMNS))
    hdr = pd.DataFrame(header_rows)
    if not hdr.empty:
        # Files without a patient from their source take the DICOM PatientID.
        patient = good["patient_id"].where(good["patient_id"] != "", _as_text(hdr.get("PatientID")))
        good = good.assign(patient_id=patient.fillna(""))
        clash = {c: f"{c}_dicom" for c in hdr.columns if c in meta.columns or c in INDEX_COLUMNS}
        hdr = hdr.rename(columns=clash).dropna(axis=1, how="all")
    index = pd.concat(
        [
            good[list(INDEX_COLUMNS)].astype("str"),
            tidy_metadata(meta),
            tidy_metadata(hdr),
            file_columns(infos),
        ],
        axis=1,
    )

    box_table = _tidy_boxes(boxes, index, warnings := list(warnings or []))
    if index["label"].nunique() == 1:
        warnings.append(f"only one class ({index['label'].iloc[0]!r}): a classifier needs at least two")
    all_sources = {os.fspath(s) for s in sources} | set(rows["path"])
    return ScanReport(
        root=os.fspath(root), format=fmt, options=dict(options), index=index, boxes=box_table,
        skipped=skips.entries(), warnings=warnings, sources=sorted(all_sources),
    )  # fmt: skip


def _nothing_found(root: Path, fmt: str, skips: SkipLog) -> str:
    entries = skips.entries(limit=3)
    if not entries:
        return f"{root}: no images found ({fmt} format)"
    first = entries[0]
    more = f"; {len(skips) - 1} more skipped" if len(skips) > 1 else ""
    where = "" if first.reason[:1].isdigit() else f"{first.path}: "
    return f"{root}: no usable images ({fmt} format); {where}{first.reason}{more}"


def _as_text(s: pd.Series | None) -> pd.Series | Any:
    if s is None:
        return ""
    return s.map(lambda v: "" if v is None or (isinstance(v, float) and v != v) else str(v).strip())


def tidy_metadata(df: pd.DataFrame) -> pd.DataFrame:
    """One dtype per metadata column, so the index stores in parquet and plots cleanly:
    numbers stay numbers, anything else becomes stripped text with blanks as missing."""
    out = {}
    for col in df.columns:
        s = df[col].reset_index(drop=True)
        if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
            out[col] = s
            continue
        values = s.dropna()
        if len(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            out[col] = pd.to_numeric(s)
            continue
        text = s.map(_text_or_na, na_action="ignore").astype("str")
        text = text.where(text.str.len() > 0)
        out[col] = _numeric_with_placeholders(text)
    return pd.DataFrame(out, index=range(len(df)))


def _numeric_with_placeholders(text: pd.Series) -> pd.Series:
    """A column of numbers written with ``?``/``NA``-style placeholders (the Cohen
    collection's ``offset``, ``temperature``) as numbers, the placeholders missing; any
    other column unchanged."""
    known = text.dropna()
    if known.empty:
        return text
    unknown = known.str.lower().isin(_PLACEHOLDERS)
    numbers = pd.to_numeric(known[~unknown], errors="coerce")
    if numbers.empty or numbers.isna().any():
        return text
    return pd.to_numeric(text.where(~text.str.lower().isin(_PLACEHOLDERS)), errors="coerce")


_PLACEHOLDERS = frozenset({"?", "??", "-", "na", "n/a", "nan", "none", "null", "unknown", "not available"})


def _text_or_na(v: Any) -> Any:
    if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue":
        return "\\".join(str(x) for x in v)
    return str(v).strip()


def _tidy_boxes(boxes: pd.DataFrame | None, index: pd.DataFrame, warnings: list[str]) -> pd.DataFrame:
    """Boxes of indexed images only; a box without a label takes its image's label."""
    if boxes is None or boxes.empty:
        return empty_boxes()
    labels = dict(zip(index["path"], index["label"], strict=True))
    inside = boxes["path"].isin(labels.keys())
    if (~inside).any():
        warnings.append(f"{int((~inside).sum())} boxes name images that are not in the index; dropped")
    b = boxes[inside].reset_index(drop=True)
    out = pd.DataFrame({"path": b["path"].astype("str")})
    for c in ("x", "y", "width", "height"):
        out[c] = pd.to_numeric(b[c], errors="coerce").astype("float64")
    given = b["label"].map(clean_label) if "label" in b.columns else pd.Series("", index=b.index)
    out["label"] = given.where(given != "", b["path"].map(labels)).astype("str")
    return out
