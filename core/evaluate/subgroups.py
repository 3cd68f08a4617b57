"""Subgroups: every metric per value of a metadata column, with counts and intervals.

One average hides gaps (Seyyed-Kalantari et al. 2021: chest X-ray classifiers missed more
disease in women, the young and some groups of patients). For each column the user picks
(sex, age band, view, modality, source, or any other) each value's images get the macro
metrics with bootstrap intervals (patients resampled when known), the positive class's
sensitivity and specificity at the operating point's threshold (at the argmax when none is
given), ECE and Brier. Groups under ``MIN_GROUP`` images are kept but marked too small:
their intervals are wide and their gaps mostly noise.

The largest gap in sensitivity for the positive class (missed disease) among groups large
enough is named first. Age is banded as Seyyed-Kalantari et al. did (0-19, 20-39, 40-59,
60-79, 80+): decades leave too many groups under 30 images on most datasets. Other numeric
columns with more than ``EXACT_MAX`` values are cut at their quartiles; text columns keep
their ``TOP_VALUES`` commonest values (the rest are ``other``); blanks are ``(missing)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from core.evaluate.bootstrap import DEFAULT_RESAMPLES, MetricEngine, Resampler, format_ci, percentile_interval

MIN_GROUP = 30
AGE_BANDS: tuple[tuple[float, str], ...] = (
    (20, "0-19"),
    (40, "20-39"),
    (60, "40-59"),
    (80, "60-79"),
    (math.inf, "80+"),
)
EXACT_MAX = 12
TOP_VALUES = 20
MISSING = "(missing)"
OTHER = "other"
METRICS = ("auc", "pr_auc", "sensitivity", "specificity", "balanced_accuracy", "accuracy")
# Concepts shown by default, matched like core.explore's (case, spaces and underscores ignored).
SOURCE_NAMES = (
    "source",
    "site",
    "hospital",
    "institution",
    "institutionname",
    "dataset",
    "center",
    "centre",
    "manufacturer",
)
CONCEPTS = ("sex", "age", "view", "modality", "source")


def _norm(name: str) -> str:
    return str(name).lower().replace("_", "").replace(" ", "")


def is_age_column(name: str) -> bool:
    from core.explore import DEFAULT_CONCEPTS

    return _norm(name) in DEFAULT_CONCEPTS["age"]


def default_columns(index: pd.DataFrame) -> list[str]:
    """The best-filled column of each concept (sex, age, view, modality, source) present."""
    from core.explore import DEFAULT_CONCEPTS, blank

    names = {**{k: DEFAULT_CONCEPTS[k] for k in ("sex", "age", "view", "modality")}, "source": SOURCE_NAMES}
    picked = []
    for concept in CONCEPTS:
        found = [c for c in index.columns if _norm(c) in names[concept]]
        filled = {c: int((~blank(index[c])).sum()) for c in found}
        found = [c for c in found if filled[c] > 0]
        if found:
            picked.append(max(found, key=lambda c: filled[c]))
    return picked


def group_values(col: pd.Series) -> pd.Series:
    """The subgroup of each row (see the module docstring for bands and bins)."""
    from core.explore import _as_numbers, blank, column_info

    missing = blank(col)
    info = column_info(col)
    if info.kind == "numeric" and (is_age_column(str(col.name)) or info.n_unique > EXACT_MAX):
        x = _as_numbers(col)
        if is_age_column(str(col.name)):
            edges = [e for e, _ in AGE_BANDS[:-1]]
            names = [n for _, n in AGE_BANDS]
        else:
            edges = list(np.unique(np.nanquantile(x.to_numpy(dtype="float64"), [0.25, 0.5, 0.75])))
            bounds = [-math.inf, *edges, math.inf]
            names = [_range_name(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
        codes = np.searchsorted(np.asarray(edges, dtype="float64"), x.to_numpy(dtype="float64"), side="right")
        out = pd.Series(np.asarray(names, dtype=object)[np.minimum(codes, len(names) - 1)], index=col.index)
        out[x.isna().to_numpy()] = MISSING
        return out.astype(str)
    text = col.astype("string").str.strip().fillna("")
    if info.kind == "numeric":
        text = _as_numbers(col).map(lambda v: f"{v:g}", na_action="ignore").astype("string").fillna(text)
    text = text.where(~missing, MISSING).astype(str)
    keep = set(text.value_counts().index[:TOP_VALUES]) | {MISSING}
    return text.where(text.isin(keep), OTHER)


def _range_name(lo: float, hi: float) -> str:
    if not math.isfinite(lo):
        return f"< {hi:g}"
    if not math.isfinite(hi):
        return f">= {lo:g}"
    return f"{lo:g} to < {hi:g}"


class _OperatingEngine:
    """The positive class's sensitivity and specificity at a fixed threshold, per resample."""

    def __init__(self, positive: np.ndarray, called: np.ndarray) -> None:
        self.pos, self.neg = positive.astype(np.float64), (~positive).astype(np.float64)
        self.tp, self.tn = (positive & called).astype(np.float64), (~positive & ~called).astype(np.float64)
        self.names = ["pos_sensitivity", "pos_specificity"]

    def compute(self, w: np.ndarray) -> dict[str, np.ndarray]:
        with np.errstate(invalid="ignore", divide="ignore"):
            return {
                "pos_sensitivity": (self.tp @ w) / (self.pos @ w),
                "pos_specificity": (self.tn @ w) / (self.neg @ w),
            }

    def point(self) -> dict[str, float]:
        return {k: float(v[0]) for k, v in self.compute(np.ones((len(self.pos), 1))).items()}


@dataclass
class SubgroupReport:
    table: (
        pd.DataFrame
    )  # column, value, n, n_patients, n_positive, too_small, metric, metric_lo, metric_hi ...
    positive_class: str
    threshold: float | None  # the operating point's, or None (argmax)
    columns: list[str]
    min_n: int = MIN_GROUP
    gap: dict[str, Any] | None = None
    skipped: dict[str, str] = field(default_factory=dict)  # column -> why it was not used

    @property
    def metrics(self) -> list[str]:
        return [*METRICS, "pos_sensitivity", "pos_specificity"]

    @property
    def gap_sentence(self) -> str:
        g = self.gap
        if g is None:
            return (
                f"No sensitivity gap can be measured: no column has two groups of {self.min_n} or more "
                f"images with {self.positive_class} images among them."
            )
        if g["gap"] == 0:
            return (
                f"No gap in sensitivity for {self.positive_class} between {g['column']} groups: "
                f"{g['low']['value']} and {g['high']['value']} both reach {g['low']['sensitivity']:.2f}."
            )
        note = " The intervals overlap: the gap may be chance." if g["overlap"] else ""
        return (
            f"Largest gap in sensitivity for {self.positive_class} (missed disease): {g['column']} "
            f"{g['low']['value']} {g['low']['text']} (n={g['low']['n']}) vs {g['high']['value']} "
            f"{g['high']['text']} (n={g['high']['n']}), a gap of {g['gap']:.2f}.{note}"
        )

    def to_json(self) -> list[dict[str, Any]]:
        """The evaluate contract's ``subgroups`` list: column, value, n, metrics, their ``ci``."""
        out = []
        for r in self.table.to_dict("records"):
            item = {
                "column": r["column"],
                "value": r["value"],
                "n": int(r["n"]),
                "n_patients": _int(r["n_patients"]),
                "n_positive": int(r["n_positive"]),
                "too_small": bool(r["too_small"]),
            }
            ci = {}
            for m in self.metrics + ["ece", "brier"]:
                item[m] = _num(r.get(m))
                if f"{m}_lo" in r:
                    ci[m] = [_num(r[f"{m}_lo"]), _num(r[f"{m}_hi"])]
            item["ci"] = ci
            out.append(item)
        return out

    def display_table(self, digits: int = 2) -> pd.DataFrame:
        """One text cell per metric (``0.91 [0.87-0.94]``), for a page or the report."""
        t = self.table
        out = t[["column", "value", "n", "n_patients", "n_positive", "too_small"]].copy()
        out["n_patients"] = out["n_patients"].astype("Int64")
        for m in self.metrics:
            out[m] = [
                format_ci(v, lo, hi, digits)
                for v, lo, hi in zip(t[m], t[f"{m}_lo"], t[f"{m}_hi"], strict=True)
            ]
        for m in ("ece", "brier"):
            out[m] = [f"{v:.3f}" if v == v else "n/a" for v in t[m]]
        return out


def _int(x: Any) -> int | None:
    return None if x is None or x != x else int(x)


def _num(x: Any) -> float | None:
    return None if x is None or x != x else float(x)


def subgroup_metrics(
    df: pd.DataFrame,
    classes: Sequence[str],
    columns: Sequence[str] | None = None,
    *,
    positive: str | None = None,
    threshold: float | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    min_n: int = MIN_GROUP,
) -> SubgroupReport:
    """``df``: predictions (``target``, ``prob/<class>``) with metadata columns (and
    ``patient_id`` to resample patients). ``columns`` None: ``default_columns``."""
    from core.evaluate.calibration import calibration_metrics
    from core.evaluate.operating_point import default_positive

    positive = positive or default_positive(classes)
    pos_index = list(classes).index(positive)
    probs = df[[f"prob/{c}" for c in classes]].to_numpy(dtype=np.float64)
    y = df["target"].to_numpy(dtype=np.int64)
    called = probs[:, pos_index] >= threshold if threshold is not None else probs.argmax(axis=1) == pos_index
    patients = df["patient_id"] if "patient_id" in df.columns else None
    columns = default_columns(df) if columns is None else list(columns)
    rows, skipped = [], {}
    for col in columns:
        if col not in df.columns:
            skipped[col] = "not a column of this dataset"
            continue
        groups = group_values(df[col])
        for value in _ordered(groups):
            m = (groups == value).to_numpy()
            ids = None if patients is None else patients[m].to_numpy()
            row = _group_row(y[m], probs[m], classes, ids, y[m] == pos_index, called[m], n_resamples, seed)
            cal = calibration_metrics(y[m], probs[m], classes)
            rows.append(
                {
                    "column": col,
                    "value": value,
                    **row,
                    "too_small": int(m.sum()) < min_n,
                    "ece": cal["ece"],
                    "brier": cal["brier"],
                }
            )
    table = pd.DataFrame(rows)
    report = SubgroupReport(
        table, positive, threshold, [c for c in columns if c not in skipped], min_n, skipped=skipped
    )
    report.gap = _largest_gap(table, min_n) if len(table) else None
    return report


def _ordered(groups: pd.Series) -> list[str]:
    values = list(pd.unique(groups))
    bands = [n for _, n in AGE_BANDS]
    if all(v in bands or v == MISSING for v in values):
        return [b for b in bands if b in values] + ([MISSING] if MISSING in values else [])
    counts = groups.value_counts()
    return sorted(values, key=lambda v: (v in (MISSING, OTHER), -int(counts[v]), v))


def _group_row(
    y: np.ndarray,
    probs: np.ndarray,
    classes: Sequence[str],
    patients: np.ndarray | None,
    positive: np.ndarray,
    called: np.ndarray,
    n_resamples: int,
    seed: int,
) -> dict[str, Any]:
    from core.evaluate.bootstrap import resample_metrics

    engine = MetricEngine(y, probs, classes)
    op = _OperatingEngine(positive, called)
    resampler = Resampler.build(y, patients)
    point = {**engine.point(), **op.point()}
    samples: dict[str, np.ndarray] = {}
    if n_resamples > 0:
        a, b = resample_metrics([engine, op], resampler, n_resamples, seed)
        samples = {**a, **b}
    row: dict[str, Any] = {
        "n": len(y),
        "n_patients": _count_patients(patients),
        "n_positive": int(positive.sum()),
    }
    for name in (*METRICS, *op.names):
        row[name] = point[name]
        lo, hi = percentile_interval(samples[name]) if name in samples else (math.nan, math.nan)
        row[f"{name}_lo"], row[f"{name}_hi"] = lo, hi
    return row


def _count_patients(patients: np.ndarray | None) -> int | None:
    if patients is None:
        return None
    ids = pd.Series(patients, dtype="string").str.strip().dropna()
    ids = ids[ids != ""]
    return int(ids.nunique()) if len(ids) else None


def _largest_gap(table: pd.DataFrame, min_n: int) -> dict[str, Any] | None:
    best = None
    ok = table[(~table["too_small"]) & (table["n_positive"] > 0) & table["pos_sensitivity"].notna()]
    ok = ok[ok["value"] != MISSING]
    for col, part in ok.groupby("column", sort=False):
        if len(part) < 2:
            continue
        # Two distinct groups even when every group scores the same (idxmin == idxmax then).
        ranked = part.sort_values("pos_sensitivity", kind="stable")
        low, high = ranked.iloc[0], ranked.iloc[-1]
        gap = float(high["pos_sensitivity"] - low["pos_sensitivity"])
        if best is None or gap > best["gap"]:
            best = {
                "column": col,
                "gap": gap,
                "low": _side(low),
                "high": _side(high),
                "overlap": bool(low["pos_sensitivity_hi"] >= high["pos_sensitivity_lo"]),
            }
    return best


def _side(r: pd.Series) -> dict[str, Any]:
    return {
        "value": r["value"],
        "n": int(r["n"]),
        "sensitivity": float(r["pos_sensitivity"]),
        "ci": [_num(r["pos_sensitivity_lo"]), _num(r["pos_sensitivity_hi"])],
        "text": format_ci(r["pos_sensitivity"], r["pos_sensitivity_lo"], r["pos_sensitivity_hi"]),
    }
