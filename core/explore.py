"""What is in a dataset: the numbers and tables behind the Explore page.

Pure functions over the index (``core.data.index``): summary numbers, class balance,
metadata column typing and distributions, crosstabs, missing values, lesion-box statistics,
pixel-intensity statistics by streaming sums, and the task builder's preview. Figures are
built from these tables in ``core.plots.explore``.

Values are shown as they are written: ``"M "`` stays distinct from ``"M"`` (and is displayed
with quotes so the space is visible). A column is numeric when at least ``NUMERIC_SHARE`` of
its non-blank values are numbers; its few other values (``50+``) are reported, not hidden.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from core.progress import ProgressFn, no_progress

MISSING = "(missing)"
OTHER = "other"
UNSPLIT = "unsplit"
NUMERIC_SHARE = 0.9
DISCRETE_MAX = 12  # a numeric column with at most this many values is drawn as bars, not bins
TEXT_MIN_UNIQUE = 50  # a categorical column with more distinct values than this (and > half) is free text
LABEL_MAX_VALUES = 50
SPLIT_ORDER = ("train", "val", "test")
# Columns shown by default, matched case-insensitively with spaces and underscores removed.
DEFAULT_CONCEPTS: dict[str, tuple[str, ...]] = {
    "age": ("age", "patientage", "ageyears"),
    "sex": ("sex", "gender", "patientsex", "patientgender"),
    "view": ("view", "viewposition", "projection", "viewcodesequence"),
    "modality": ("modality",),
}
INDEX_FIXED = ("path", "label", "split", "patient_id")
FILE_COLUMNS = ("file_format", "file_mode", "file_bit_depth", "file_width", "file_height", "file_bytes")


# ---------------------------------------------------------------- basics


def blank(col: pd.Series) -> pd.Series:
    """True where a value is missing: NA, or an empty / whitespace-only string."""
    if pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
        return col.isna()
    text = col.astype("string")
    return (text.isna() | (text.str.strip() == "")).fillna(True).astype(bool)


def display_value(value: Any) -> str:
    """A value as text, with quotes when surrounding spaces would otherwise be invisible."""
    text = str(value)
    return f'"{text}"' if text != text.strip() or text == "" else text


def class_order(index: pd.DataFrame, column: str = "label") -> list[str]:
    """Class names in the order every figure uses: "normal"-like names first, then sorted."""
    from core.data.tasks import order_classes

    values = index[column][~blank(index[column])].astype(str).unique()
    return order_classes([str(v) for v in values])


def split_names(index: pd.DataFrame) -> list[str]:
    """train/val/test first, then other names; ``unsplit`` for rows without a split."""
    present = set(index["split"].fillna("").astype(str))
    names = [s for s in SPLIT_ORDER if s in present] + sorted(present - set(SPLIT_ORDER) - {""})
    return names + ([UNSPLIT] if "" in present else [])


def _split_col(index: pd.DataFrame) -> pd.Series:
    s = index["split"].fillna("").astype(str)
    return s.where(s != "", UNSPLIT)


def metadata_columns(index: pd.DataFrame) -> list[str]:
    fixed = set(INDEX_FIXED) | set(FILE_COLUMNS)
    return [str(c) for c in index.columns if c not in fixed]


# ---------------------------------------------------------------- summary


@dataclass(frozen=True)
class Summary:
    n_images: int
    n_classes: int
    classes: dict[str, int]
    splits: dict[str, int]  # images per split (``unsplit`` for rows without one)
    n_patients: int | None  # None when the dataset names no patients
    images_per_patient: float | None
    max_images_per_patient: int | None
    imbalance_ratio: float | None  # largest class / smallest class; None below two classes
    n_skipped: int
    n_boxes: int
    n_images_with_boxes: int


def summarize(index: pd.DataFrame, boxes: pd.DataFrame | None = None, n_skipped: int = 0) -> Summary:
    labels = index["label"][~blank(index["label"])].astype(str)
    counts = labels.value_counts()
    classes = {c: int(counts[c]) for c in class_order(index)}
    split_counts = _split_col(index).value_counts()
    splits = {s: int(split_counts.get(s, 0)) for s in split_names(index)}
    pids = index["patient_id"][~blank(index["patient_id"])].astype(str)
    per_patient = pids.value_counts()
    boxes = boxes if boxes is not None else pd.DataFrame(columns=["path"])
    return Summary(
        n_images=len(index),
        n_classes=len(classes),
        classes=classes,
        splits=splits,
        n_patients=len(per_patient) or None,
        images_per_patient=round(len(pids) / len(per_patient), 2) if len(per_patient) else None,
        max_images_per_patient=int(per_patient.max()) if len(per_patient) else None,
        imbalance_ratio=round(float(counts.max() / counts.min()), 2) if len(counts) >= 2 else None,
        n_skipped=n_skipped,
        n_boxes=len(boxes),
        n_images_with_boxes=int(boxes["path"].nunique()) if len(boxes) else 0,
    )


# ---------------------------------------------------------------- class balance


def class_counts(index: pd.DataFrame, label_column: str = "label") -> pd.DataFrame:
    """Long table ``split, class, count, percent`` (percent of the split's images)."""
    labels = index[label_column].astype(str).where(~blank(index[label_column]), MISSING)
    table = pd.crosstab(_split_col(index), labels)
    classes = [c for c in class_order(index, label_column) if c in table.columns]
    classes += [MISSING] if MISSING in table.columns else []
    table = table.reindex(index=[s for s in split_names(index)], columns=classes, fill_value=0)
    long = table.rename_axis(index="split", columns="class").stack().rename("count").reset_index()
    totals = long.groupby("split", sort=False)["count"].transform("sum")
    long["percent"] = (100.0 * long["count"] / totals.where(totals > 0, 1)).round(1)
    long["count"] = long["count"].astype("int64")
    return long


def class_table(long: pd.DataFrame) -> pd.DataFrame:
    """Wide table for display: a row per class, counts per split, total, share of all."""
    wide = long.pivot(index="class", columns="split", values="count")
    wide = wide.reindex(index=list(dict.fromkeys(long["class"])), columns=list(dict.fromkeys(long["split"])))
    wide = wide.fillna(0).astype("int64")
    wide["total"] = wide.sum(axis=1)
    wide["share %"] = (100.0 * wide["total"] / max(int(wide["total"].sum()), 1)).round(1)
    wide.index.name = "class"
    return wide


# ---------------------------------------------------------------- column typing


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    kind: str  # "numeric", "categorical", "text" (free text, ids) or "empty"
    n_values: int  # non-blank values
    n_unique: int
    n_not_numbers: int = 0  # numeric columns: values that are not numbers, kept as written


def _as_numbers(col: pd.Series) -> pd.Series:
    """Numbers as floats, NaN where a value is not one."""
    if pd.api.types.is_bool_dtype(col):
        return pd.Series(np.nan, index=col.index)
    if pd.api.types.is_numeric_dtype(col):
        return col.astype("float64")
    text = col.astype("string").str.strip()
    uniq = pd.unique(text.dropna())
    if len(uniq) <= len(text) // 2:  # parsing strings is slow: parse each distinct value once
        parsed = pd.to_numeric(pd.Series(uniq, dtype=object), errors="coerce").to_numpy(dtype="float64")
        return text.map(pd.Series(parsed, index=uniq)).astype("float64")
    return pd.to_numeric(text, errors="coerce").astype("float64")


def column_info(col: pd.Series) -> ColumnInfo:
    present = col[~blank(col)]
    name = str(col.name)
    if present.empty:
        return ColumnInfo(name, "empty", 0, 0)
    n_unique = int(present.nunique())
    # A sample that is mostly not numbers settles it without parsing 30,000 ids.
    sample = present.iloc[:: max(1, len(present) // 400)]
    if _as_numbers(sample).notna().mean() >= NUMERIC_SHARE / 2:
        n_numbers = int(_as_numbers(present).notna().sum())
        if n_numbers >= NUMERIC_SHARE * len(present):
            return ColumnInfo(name, "numeric", len(present), n_unique, len(present) - n_numbers)
    kind = "text" if n_unique > TEXT_MIN_UNIQUE and n_unique > 0.5 * len(present) else "categorical"
    return ColumnInfo(name, kind, len(present), n_unique)


def column_infos(index: pd.DataFrame, columns: Iterable[str] | None = None) -> dict[str, ColumnInfo]:
    cols = list(columns) if columns is not None else [c for c in index.columns if c != "path"]
    return {c: column_info(index[c]) for c in cols}


def default_columns(index: pd.DataFrame, infos: dict[str, ColumnInfo] | None = None) -> list[str]:
    """Age, sex, view and modality columns when present (the best-filled one per concept);
    the file format and width when the dataset has none of them."""
    infos = infos or column_infos(index, metadata_columns(index))
    picked: list[str] = []
    for names in DEFAULT_CONCEPTS.values():
        found = [
            c for c, info in infos.items()
            if info.kind != "empty" and c.lower().replace("_", "").replace(" ", "") in names
        ]  # fmt: skip
        if found:
            picked.append(max(found, key=lambda c: infos[c].n_values))
    if not picked:
        picked = [c for c in ("file_format", "file_width") if c in index.columns]
    return picked


def label_columns(index: pd.DataFrame, infos: dict[str, ColumnInfo]) -> list[str]:
    """Columns a task can use as its label: ``label`` and categorical columns with 2-50 values."""
    out = ["label"]
    for c, info in infos.items():
        if c in INDEX_FIXED or c in FILE_COLUMNS:
            continue
        if info.kind in ("categorical", "numeric") and 2 <= info.n_unique <= LABEL_MAX_VALUES:
            out.append(c)
    return out


# ---------------------------------------------------------------- distributions


@dataclass
class Distribution:
    column: str
    kind: str  # "histogram" (numeric bins) or "bars" (values)
    table: pd.DataFrame  # value (display text), x, width, group, count
    values: list[str]  # x order
    groups: list[str]  # colour order
    n_missing: int
    not_numbers: dict[str, int] = field(default_factory=dict)  # numeric columns: other values


def _groups(index: pd.DataFrame, by: str | None) -> tuple[pd.Series, list[str]]:
    if by is None:
        return pd.Series("all", index=index.index), ["all"]
    if by == "split":
        return _split_col(index), split_names(index)
    col = index[by].astype(str).where(~blank(index[by]), MISSING)
    order = class_order(index, by) if by == "label" else sorted(col.unique())
    return col, order + ([MISSING] if MISSING in set(col) and MISSING not in order else [])


def distribution(
    index: pd.DataFrame, column: str, by: str | None = "label", bins: int = 20, top_n: int = 12
) -> Distribution:
    """Counts of one column's values (top ``top_n`` + ``other``) or numeric bins, per group."""
    col = index[column]
    missing = blank(col)
    info = column_info(col)
    groups, order = _groups(index, by)
    if info.kind == "numeric" and info.n_unique > DISCRETE_MAX:
        return _histogram(col[~missing], groups[~missing], order, column, int(missing.sum()), bins)
    if info.kind == "numeric":
        numbers = _as_numbers(col[~missing])
        text = numbers.map(lambda v: f"{v:g}", na_action="ignore").fillna(col[~missing].astype(str))
        ranked = sorted(text.unique(), key=lambda v: (_number_or_inf(v), v))
    else:
        text = col[~missing].astype(str)
        counts = text.value_counts()
        ranked = list(counts.index[:top_n])
        if len(counts) > top_n:
            text = text.where(text.isin(ranked), OTHER)
            ranked.append(OTHER)
    table = pd.crosstab(text, groups[~missing]).reindex(index=ranked, fill_value=0)
    table = table.reindex(columns=[g for g in order if g in table.columns], fill_value=0)
    long = table.rename_axis(index="raw", columns="group").stack().rename("count").reset_index()
    long["value"] = long["raw"].map(lambda v: v if v == OTHER else display_value(v))
    long["x"] = long["value"]
    long["width"] = np.nan
    shown = [v if v == OTHER else display_value(v) for v in ranked]
    return Distribution(column, "bars", long[["value", "x", "width", "group", "count"]], shown,
                        list(table.columns), int(missing.sum()))  # fmt: skip


def _number_or_inf(v: str) -> float:
    try:
        return float(v)
    except ValueError:
        return float("inf")


def _histogram(
    col: pd.Series, groups: pd.Series, order: list[str], column: str, n_missing: int, bins: int
) -> Distribution:
    numbers = _as_numbers(col)
    not_numbers = col[numbers.isna()].astype(str).map(display_value).value_counts()
    ok = numbers.notna().to_numpy()
    values, g = numbers.to_numpy()[ok], groups.to_numpy()[ok]
    edges = nice_edges(values, bins)
    idx = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
    frame = pd.DataFrame({"bin": idx, "group": g})
    counts = frame.groupby(["bin", "group"]).size()
    present = [o for o in order if o in set(g)]
    full = pd.MultiIndex.from_product([range(len(edges) - 1), present], names=["bin", "group"])
    long = counts.reindex(full, fill_value=0).rename("count").reset_index()
    left, right = edges[long["bin"]], edges[long["bin"] + 1]
    long["x"] = (left + right) / 2
    long["width"] = right - left
    long["value"] = [f"{a:g} to {b:g}" for a, b in zip(left, right, strict=True)]
    labels = [f"{edges[i]:g} to {edges[i + 1]:g}" for i in range(len(edges) - 1)]
    return Distribution(column, "histogram", long[["value", "x", "width", "group", "count"]], labels, present,
                        n_missing, {str(k): int(v) for k, v in not_numbers.items()})  # fmt: skip


def nice_edges(values: np.ndarray, bins: int) -> np.ndarray:
    """About ``bins`` equal bins whose width is 1, 2, 2.5 or 5 times a power of ten, so edges
    read as 20, 25, 30 rather than 21, 24.2, 27.4."""
    lo, hi = float(np.min(values)), float(np.max(values))
    if hi <= lo:
        return np.array([lo - 0.5, lo + 0.5])
    raw = (hi - lo) / max(bins, 1)
    power = 10.0 ** np.floor(np.log10(raw))
    width = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    if _all_integers(values):
        width = max(1.0, np.ceil(width))
    start = np.floor(lo / width) * width
    n = int(np.floor((hi - start) / width)) + 1
    return start + width * np.arange(n + 1)


def _all_integers(values: np.ndarray) -> bool:
    return bool(len(values)) and bool(np.all(np.mod(values, 1) == 0))


# ---------------------------------------------------------------- crosstab, missing values


def _binned(col: pd.Series, bins: int, top_n: int) -> tuple[pd.Series, list[str]]:
    """Values as category labels: numeric columns in ``bins`` equal bins, others top-N + other."""
    missing = blank(col)
    info = column_info(col)
    if info.kind == "numeric" and info.n_unique > DISCRETE_MAX:
        numbers = _as_numbers(col)
        ok = numbers.notna()
        edges = nice_edges(numbers[ok].to_numpy(), bins)
        idx = np.clip(np.searchsorted(edges, numbers[ok].to_numpy(), side="right") - 1, 0, len(edges) - 2)
        labels = [f"{edges[i]:g} to {edges[i + 1]:g}" for i in range(len(edges) - 1)]
        out = pd.Series(OTHER, index=col.index, dtype=object)
        out[ok] = [labels[i] for i in idx]
        out[missing] = MISSING
        order = labels + [v for v in (OTHER, MISSING) if v in set(out)]
        return out, order
    numbers = _as_numbers(col) if info.kind == "numeric" else None
    text = col.astype(str).map(display_value)
    if numbers is not None:
        text = numbers.map(lambda v: f"{v:g}", na_action="ignore").fillna(text)
    counts = text[~missing].value_counts()
    top = list(counts.index[:top_n])
    if col.name == "label":  # classes in the order every figure uses
        order = {c: i for i, c in enumerate(class_order(col.to_frame()))}
        top = sorted(top, key=lambda v: order.get(v, len(order)))
    out = text.where(text.isin(top), OTHER).where(~missing, MISSING)
    if info.kind == "numeric":
        top = sorted(top, key=lambda v: (_number_or_inf(v.strip('"')), v))
    order = top + [v for v in (OTHER, MISSING) if v in set(out)]
    return out, order


def crosstab(index: pd.DataFrame, row: str, column: str, bins: int = 8, top_n: int = 15) -> pd.DataFrame:
    """Counts of two columns' values against each other (numeric columns binned)."""
    a, a_order = _binned(index[row], bins, top_n)
    if row == column:
        b, b_order = a, a_order
    else:
        b, b_order = _binned(index[column], bins, top_n)
    table = pd.crosstab(a.rename(row), b.rename(column))
    return table.reindex(index=a_order, columns=b_order, fill_value=0)


def missing_values(index: pd.DataFrame, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """``column, missing, percent`` for every column but ``path``, most missing first."""
    cols = list(columns) if columns is not None else [c for c in index.columns if c != "path"]
    n = max(len(index), 1)
    rows = [(c, int(blank(index[c]).sum())) for c in cols]
    out = pd.DataFrame(rows, columns=["column", "missing"])
    out["percent"] = (100.0 * out["missing"] / n).round(1)
    return out.sort_values(["missing", "column"], ascending=[False, True], kind="stable").reset_index(
        drop=True
    )


# ---------------------------------------------------------------- gallery


def filter_index(
    index: pd.DataFrame,
    classes: Sequence[str] = (),
    splits: Sequence[str] = (),
    column: str | None = None,
    values: Sequence[str] = (),
) -> pd.DataFrame:
    """Rows of the chosen classes, splits and values of one column (empty choice = all)."""
    keep = pd.Series(True, index=index.index)
    if classes:
        keep &= index["label"].astype(str).isin(list(classes))
    if splits:
        keep &= _split_col(index).isin(list(splits))
    if column and values:
        shown = index[column].astype(str).map(display_value).where(~blank(index[column]), MISSING)
        keep &= shown.isin(list(values))
    return index[keep.to_numpy()]


def column_values(index: pd.DataFrame, column: str, limit: int = 200) -> list[str]:
    """The displayed values of a column, most frequent first (for filter pickers)."""
    shown = index[column].astype(str).map(display_value).where(~blank(index[column]), MISSING)
    return list(shown.value_counts().index[:limit])


def page_of(rows: pd.DataFrame, page: int, per_page: int) -> pd.DataFrame:
    """Rows of the 1-based ``page``."""
    start = max(page - 1, 0) * per_page
    return rows.iloc[start : start + per_page]


def n_pages(n_rows: int, per_page: int) -> int:
    return max(1, -(-n_rows // per_page))


def row_table(row: pd.Series) -> pd.DataFrame:
    """One index row as ``field, value`` (blank fields left out)."""
    items = [(str(k), display_value(v)) for k, v in row.items() if not _is_blank_value(v)]
    return pd.DataFrame(items, columns=["field", "value"])


def _is_blank_value(v: Any) -> bool:
    return (
        v is None or (not isinstance(v, str) and bool(pd.isna(v))) or (isinstance(v, str) and not v.strip())
    )


def image_with_boxes(
    path: str, boxes: pd.DataFrame, longest: int = 1024, colors: dict[str, str] | None = None
) -> np.ndarray:
    """The image as the app shows it (RGB), with its lesion boxes drawn in class colours
    (``colors``: the page's class colours)."""
    from PIL import Image, ImageDraw

    from core.data.images import preview, resize
    from core.plots.style import color_map

    full, _ = preview(path)
    scale = min(1.0, longest / max(full.shape[:2]))
    img = resize(full, max(1, round(full.shape[1] * scale)), max(1, round(full.shape[0] * scale)))
    if boxes.empty:
        return img
    scale_x, scale_y = img.shape[1] / full.shape[1], img.shape[0] / full.shape[0]
    canvas = Image.fromarray(img).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    labels = boxes["label"].fillna("").astype(str).tolist() if "label" in boxes else [""] * len(boxes)
    colours = {**color_map(sorted(set(labels))), **(colors or {})}
    line = max(2, round(max(canvas.size) / 256))
    for (x, y, w, h), lab in zip(boxes[["x", "y", "width", "height"]].to_numpy(float), labels, strict=True):
        draw.rectangle([x * scale_x, y * scale_y, (x + w) * scale_x, (y + h) * scale_y], outline=colours[lab],
                       width=line)  # fmt: skip
    return np.asarray(canvas)


# ---------------------------------------------------------------- lesion boxes


@dataclass
class BoxStats:
    n_boxes: int
    n_images_with_boxes: int
    n_without_size: int  # boxes whose image size is unknown (left out of the figures)
    boxes: pd.DataFrame  # path, class, cx, cy, w, h, area (normalised to the image, 0..1)
    centres: np.ndarray  # (bins, bins) counts of box centres; row 0 = top of the image
    classes: list[str]


def box_stats(boxes: pd.DataFrame, index: pd.DataFrame, bins: int = 20) -> BoxStats:
    """Box centres and sizes in normalised image coordinates; a box without its own label
    takes its image's class."""
    sizes = index[["path", "label", "file_width", "file_height"]].drop_duplicates("path")
    boxes = boxes if "label" in boxes.columns else boxes.assign(label="")
    b = boxes.merge(sizes, on="path", how="left")
    own = b["label_x"].astype(str).where(~blank(b["label_x"]), b["label_y"].astype(str))
    w_img = pd.to_numeric(b["file_width"], errors="coerce").astype("float64")
    h_img = pd.to_numeric(b["file_height"], errors="coerce").astype("float64")
    ok = (w_img > 0) & (h_img > 0)
    x, y = b["x"].astype("float64"), b["y"].astype("float64")
    w, h = b["width"].astype("float64"), b["height"].astype("float64")
    norm = pd.DataFrame({
        "path": b["path"], "class": own,
        "cx": (x + w / 2) / w_img, "cy": (y + h / 2) / h_img, "w": w / w_img, "h": h / h_img,
    })[ok.to_numpy()]  # fmt: skip
    norm["area"] = norm["w"] * norm["h"]
    centres, _, _ = np.histogram2d(
        norm["cy"].clip(0, 1), norm["cx"].clip(0, 1), bins=bins, range=[[0, 1], [0, 1]]
    )
    from core.data.tasks import order_classes

    return BoxStats(len(boxes), int(boxes["path"].nunique()), int((~ok).sum()), norm.reset_index(drop=True),
                    centres, order_classes(norm["class"].unique().tolist()))  # fmt: skip


def box_size_table(stats: BoxStats, bins: int = 20) -> pd.DataFrame:
    """Histogram of box area (percent of the image) per class: ``x, width, group, count``."""
    pct = 100.0 * stats.boxes["area"].to_numpy()
    if len(pct) == 0:
        return pd.DataFrame(columns=["x", "width", "group", "count"])
    edges = np.histogram_bin_edges(pct, bins=bins)
    rows = []
    for cls in stats.classes:
        counts, _ = np.histogram(pct[(stats.boxes["class"] == cls).to_numpy()], bins=edges)
        rows += [
            (float((a + b) / 2), float(b - a), cls, int(n))
            for a, b, n in zip(edges[:-1], edges[1:], counts, strict=True)
        ]
    return pd.DataFrame(rows, columns=["x", "width", "group", "count"])


# ---------------------------------------------------------------- intensity statistics


@dataclass
class IntensityStats:
    """Pixel statistics of a sample (0..1 scale, images decoded and resized as training does)."""

    mean: float
    std: float
    n_images: int
    n_failed: int
    size: int
    classes: list[str]
    histogram: list[list[float]]  # per class, share of pixels in each of 32 equal bins
    image_means: dict[str, list[float]]  # per class, each image's mean

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> IntensityStats:
        return cls(**d)


HIST_BINS = 32


def sample_rows(index: pd.DataFrame, n: int, seed: int = 0, split: str | None = "train") -> pd.DataFrame:
    """Up to ``n`` rows, drawn from every class in proportion; from the ``split`` when the
    dataset has it (Train normalises by its train split), else from all rows."""
    rows = index
    if split and (index["split"].astype(str) == split).any():
        rows = index[(index["split"].astype(str) == split).to_numpy()]
    if len(rows) <= n:
        return rows
    return rows.sample(n=n, random_state=seed).sort_values("path")


def intensity_stats(
    paths: Sequence[str],
    groups: Sequence[str],
    *,
    size: int = 224,
    progress: ProgressFn = no_progress,
    workers: int | None = None,
    workspace: str | os.PathLike[str] | None = None,
) -> IntensityStats:
    """Mean and standard deviation of the pixels of ``paths`` by streaming sums (float64
    totals, one image in memory per worker), decoded and resized to ``size`` as the training
    cache does; per-class histograms and image means too. Cached in the workspace."""
    key = intensity_cache_key(paths, size)
    cached = load_intensity(key, workspace)
    if cached is not None:
        progress(len(paths), len(paths), "cached")
        return cached
    classes = sorted(set(groups), key=str)
    where = {c: i for i, c in enumerate(classes)}
    hist = np.zeros((len(classes), 256), dtype=np.float64)
    means: dict[str, list[float]] = {c: [] for c in classes}
    total = total_sq = 0.0
    n_pixels = n_ok = 0
    for i, (img, group) in enumerate(_decoded(paths, groups, size, workers)):
        if img is not None:
            x = img.astype(np.float64) / 255.0
            total += float(x.sum())
            total_sq += float(np.square(x).sum())
            n_pixels += x.size
            n_ok += 1
            hist[where[group]] += np.bincount(img.ravel(), minlength=256)
            means[group].append(round(float(x.mean()), 4))
        if i % 16 == 0 or i == len(paths) - 1:
            progress(i + 1, len(paths), "reading pixels")
    mean = total / n_pixels if n_pixels else float("nan")
    std = float(np.sqrt(max(total_sq / n_pixels - mean * mean, 0.0))) if n_pixels else float("nan")
    binned = hist.reshape(len(classes), HIST_BINS, 256 // HIST_BINS).sum(axis=2)
    shares = binned / np.maximum(binned.sum(axis=1, keepdims=True), 1)
    stats = IntensityStats(round(mean, 5), round(std, 5), n_ok, len(paths) - n_ok, size, classes,
                           shares.round(5).tolist(), means)  # fmt: skip
    save_intensity(key, stats, workspace)
    return stats


def _decoded(paths: Sequence[str], groups: Sequence[str], size: int, workers: int | None):
    from core.data.images import ImageError, read_gray, resize_gray

    def load(path: str) -> np.ndarray | None:
        try:
            return resize_gray(read_gray(path), size)
        except ImageError:
            return None

    with ThreadPoolExecutor(max_workers=workers or min(4, (os.cpu_count() or 2) * 2)) as pool:
        yield from zip(pool.map(load, paths), groups, strict=True)


def intensity_cache_key(paths: Sequence[str], size: int) -> str:
    """The cache key of a sample: its paths, their sizes and modification times, the size."""
    h = hashlib.sha1(f"intensity-v1:{size}".encode())
    for p in sorted(paths):
        try:
            st = os.stat(p)
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}\0missing\n".encode())
    return h.hexdigest()[:24]


def load_intensity(key: str, workspace: str | os.PathLike[str] | None = None) -> IntensityStats | None:
    from core.workspace import cache_dir

    path = cache_dir("intensity", workspace) / f"{key}.json"
    try:
        return IntensityStats.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def save_intensity(key: str, stats: IntensityStats, workspace: str | os.PathLike[str] | None = None) -> None:
    from core.fileio import atomic_write_json
    from core.workspace import cache_dir

    try:
        atomic_write_json(cache_dir("intensity", workspace) / f"{key}.json", stats.to_json(), indent=None)
    except OSError:  # a read-only workspace only costs a recomputation
        pass


# ---------------------------------------------------------------- task builder


@dataclass
class TaskPreview:
    table: pd.DataFrame  # rows: classes, columns: splits + total
    long: pd.DataFrame  # split, class, count, percent (as ``class_counts``) for the figure
    n_rows: int  # rows the task keeps
    n_dropped: int
    error: str | None = None


def task_preview(index: pd.DataFrame, task: Any) -> TaskPreview:
    """The class balance a task gives on this index, or the one-line reason it cannot."""
    from core.data.tasks import apply_task, class_balance
    from core.errors import ChestLabError

    # Only the columns the task reads: copying a wide 30,000-row index costs more than the split.
    needed = {"path", "split", "patient_id", task.label_column, *(f.column for f in task.filters)}
    try:
        applied = apply_task(index[[c for c in index.columns if c in needed]], task)
    except ChestLabError as exc:
        return TaskPreview(pd.DataFrame(), pd.DataFrame(columns=["split", "class", "count", "percent"]), 0,
                           len(index), str(exc))  # fmt: skip
    balance = class_balance(applied)
    long = balance.rename_axis(index="split", columns="class").stack().rename("count").reset_index()
    totals = long.groupby("split", sort=False)["count"].transform("sum")
    long["percent"] = (100.0 * long["count"] / totals.where(totals > 0, 1)).round(1)
    wide = balance.T
    wide.columns = [str(c) for c in wide.columns]
    wide["total"] = wide.sum(axis=1)
    wide.index.name = "class"
    return TaskPreview(wide.astype("int64"), long, len(applied), len(index) - len(applied))


def value_counts(index: pd.DataFrame, column: str) -> pd.DataFrame:
    """``value, count`` of a label column as the task sees it (stripped, blanks left out)."""
    col = index[column]
    text = col[~blank(col)].astype(str).str.strip()
    counts = text.value_counts()
    return pd.DataFrame({"value": counts.index.astype(str), "count": counts.to_numpy()})
