"""Bootstrap confidence intervals for the metrics a clinician reads.

Resampling: 1,000 resamples by default, percentile intervals at 95%. When the images name
their patients, whole patients are resampled (a patient's images are not independent: five
films of one patient count as one draw), else images. Resampling is stratified by class
(a patient's class is the majority class of its images), so every resample keeps the
class counts of the sample and every per-class metric is defined in every resample.

Vectorised: a resample is a row of a count matrix ``W`` (how often each image is drawn), and
every metric is a weighted statistic of the fixed predictions. ROC-AUC and average precision
(PR-AUC) come from each class's scores sorted once: for each positive, the weighted number of
negatives scoring below it is a gather from one cumulative sum (ties count one half, as in
``roc_auc_score``); the confusion matrix at the argmax is one matrix product. The metrics on
the original sample (all weights 1) equal ``core.train.metrics.classification_metrics``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

DEFAULT_RESAMPLES = 1000
DEFAULT_LEVEL = 0.95
# Metrics with an interval; per class ``name/<class>`` for the first four.
PER_CLASS_METRICS = ("auc", "pr_auc", "sensitivity", "specificity")
MACRO_METRICS = (
    "auc",
    "pr_auc",
    "sensitivity",
    "specificity",
    "accuracy",
    "balanced_accuracy",
    "precision",
    "f1",
)
_CHUNK_ELEMENTS = 1 << 20  # resamples x images per block: temporaries stay a few MB


# ---------------------------------------------------------------- formatting


def format_ci(value: float | None, lo: float | None, hi: float | None, digits: int = 2) -> str:
    """``0.91 [0.87-0.94]``; ``n/a`` when the value is undefined."""
    if value is None or _nan(value):
        return "n/a"
    if lo is None or hi is None or _nan(lo) or _nan(hi):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{lo:.{digits}f}-{hi:.{digits}f}]"


def _nan(x: Any) -> bool:
    try:
        return math.isnan(float(x))
    except (TypeError, ValueError):
        return True


# ---------------------------------------------------------------- resampling


@dataclass(frozen=True)
class Resampler:
    """Draws count matrices ``(b, n_images)``: stratified by class, by patient when known."""

    unit_of_image: np.ndarray  # (N,) unit index of each image
    strata: list[np.ndarray]  # unit indices of each class stratum
    n_units: int
    by_patient: bool

    @classmethod
    def build(cls, y: np.ndarray, groups: Sequence[Any] | np.ndarray | None = None) -> Resampler:
        y = np.asarray(y, dtype=np.int64)
        n = len(y)
        ids = _group_ids(groups, n)
        if ids is None:
            units, unit_class, by_patient = np.arange(n), y, False
        else:
            units, names = pd.factorize(ids, sort=False)
            k = int(y.max()) + 1 if n else 1
            counts = np.bincount(units * k + y, minlength=len(names) * k).reshape(len(names), k)
            unit_class = counts.argmax(axis=1)
            # Every image its own patient: an image bootstrap, named as such.
            by_patient = len(names) < n
        strata = [np.flatnonzero(unit_class == c) for c in np.unique(unit_class)]
        return cls(np.asarray(units, dtype=np.int64), strata, int(len(unit_class)), by_patient)

    @property
    def unit(self) -> str:
        return "patients" if self.by_patient else "images"

    def counts(self, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
        """``(N, n_resamples)`` float64 counts of each image: one column per resample
        (row gathers and cumulative sums down the columns are the fast direction)."""
        draws = np.empty((n_resamples, self.n_units), dtype=np.int64)
        col = 0
        for members in self.strata:
            m = len(members)
            draws[:, col : col + m] = members[rng.integers(0, m, size=(n_resamples, m))]
            col += m
        draws *= n_resamples
        draws += np.arange(n_resamples, dtype=np.int64)[:, None]
        unit_counts = np.bincount(draws.ravel(), minlength=n_resamples * self.n_units)
        unit_counts = unit_counts.reshape(self.n_units, n_resamples).astype(np.float64)
        if not self.by_patient and np.array_equal(self.unit_of_image, np.arange(self.n_units)):
            return unit_counts
        return unit_counts[self.unit_of_image]


def _group_ids(groups: Sequence[Any] | np.ndarray | None, n: int) -> np.ndarray | None:
    """Patient ids with blanks made unique (an image without a patient is its own unit);
    None when no image names a patient."""
    if groups is None:
        return None
    g = pd.Series(list(groups) if not isinstance(groups, (np.ndarray, pd.Series)) else groups)
    text = g.astype("string").str.strip().fillna("")
    blank = text.eq("") | text.isin(["nan", "None", "<NA>"])
    if blank.all():
        return None
    rows = pd.Series(np.arange(n)).astype(str)
    return np.asarray(text.where(~blank, "\x00row" + rows).to_numpy(dtype=object))


# ---------------------------------------------------------------- weighted metrics


@dataclass(frozen=True)
class _ClassOrder:
    """One class's scores split into positives and negatives, each sorted ascending, and
    for every positive where it falls among the negatives and among the positives."""

    pos: np.ndarray  # image indices of positives, ascending score
    neg: np.ndarray  # image indices of negatives, ascending score
    neg_lt: np.ndarray  # per positive: negatives with a lower score
    neg_le: np.ndarray  # per positive: negatives with a lower or equal score
    pos_lt: np.ndarray  # per positive: positives with a lower score
    neg_ties: bool  # some positive scores equal some negative's
    pos_ties: bool  # some positives share a score

    @classmethod
    def build(cls, score: np.ndarray, positive: np.ndarray) -> _ClassOrder:
        pos = np.flatnonzero(positive)
        neg = np.flatnonzero(~positive)
        pos = pos[np.argsort(score[pos], kind="stable")]
        neg = neg[np.argsort(score[neg], kind="stable")]
        sp, sn = score[pos], score[neg]
        neg_lt, neg_le = np.searchsorted(sn, sp, "left"), np.searchsorted(sn, sp, "right")
        pos_lt = np.searchsorted(sp, sp, "left")
        return cls(
            pos,
            neg,
            neg_lt,
            neg_le,
            pos_lt,
            bool((neg_le != neg_lt).any()),
            bool((pos_lt != np.arange(len(pos))).any()),
        )

    def auc_ap(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Weighted ROC-AUC and average precision for each column of ``w`` (N, b)."""
        wp, wn = w[self.pos], w[self.neg]
        cn = _cumsum0(wn)
        cp = _cumsum0(wp)
        total_p, total_n = cp[-1], cn[-1]
        below = cn[self.neg_lt]
        # Without ties the "equal" and "lower positives" gathers are known: skip them.
        half_equal = 0.5 * (cn[self.neg_le] - below) if self.neg_ties else 0.0
        lower_p = cp[self.pos_lt] if self.pos_ties else cp[:-1]
        with np.errstate(invalid="ignore", divide="ignore"):
            auc = _dot_columns(wp, below + half_equal) / (total_p * total_n)
            # At a positive's score: everything scoring >= it is called positive.
            tp = total_p - lower_p
            ap = _dot_columns(wp, tp / (tp + (total_n - below))) / total_p
        return auc, ap


def _cumsum0(x: np.ndarray) -> np.ndarray:
    out = np.empty((len(x) + 1, x.shape[1]))
    out[0] = 0.0
    np.cumsum(x, axis=0, out=out[1:])
    return out


def _dot_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->j", a, b)


def _confusion(w: np.ndarray, cells: tuple[np.ndarray, np.ndarray, np.ndarray], k: int) -> np.ndarray:
    """(b, k, k) weighted confusion matrices (rows = true class). ``cells``: the images
    ordered by confusion cell, where each present cell starts, and which cell it is. (A
    matrix product with a one-hot matrix is slower: BLAS threads fight on a busy machine.)"""
    order, starts, codes = cells
    out = np.zeros((k * k, w.shape[1]))
    if len(order):
        out[codes] = np.add.reduceat(w[order], starts, axis=0)
    return out.T.reshape(w.shape[1], k, k)


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


class MetricEngine:
    """Every bootstrap metric for a fixed set of predictions, for any weight matrix."""

    def __init__(self, y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> None:
        self.y = np.asarray(y_true, dtype=np.int64)
        self.probs = np.asarray(probs, dtype=np.float64)
        self.classes = [str(c) for c in classes]
        self.k = len(self.classes)
        n = len(self.y)
        self.present = np.bincount(self.y, minlength=self.k) > 0
        code = self.y * self.k + self.probs.argmax(axis=1)
        order = np.argsort(code, kind="stable")
        codes, starts = np.unique(code[order], return_index=True)
        self.cells = (order, starts, codes)
        self.orders: dict[int, _ClassOrder] = {}
        for c in range(self.k):
            positive = self.y == c
            if 0 < positive.sum() < n:
                self.orders[c] = _ClassOrder.build(self.probs[:, c], positive)

    @property
    def names(self) -> list[str]:
        return list(MACRO_METRICS) + [f"{m}/{c}" for m in PER_CLASS_METRICS for c in self.classes]

    def compute(self, w: np.ndarray) -> dict[str, np.ndarray]:
        """Metric name -> (b,) values for weights ``w`` (N, b): one column per resample."""
        b, k = w.shape[1], self.k
        out: dict[str, np.ndarray] = {}
        aucs = np.full((b, k), np.nan)
        aps = np.full((b, k), np.nan)
        for c, order in self.orders.items():
            aucs[:, c], aps[:, c] = order.auc_ap(w)
        cm = _confusion(w, self.cells, k)
        tp = np.diagonal(cm, axis1=1, axis2=2)
        row, col = cm.sum(axis=2), cm.sum(axis=1)
        total = cm.sum(axis=(1, 2))[:, None]
        fn, fp = row - tp, col - tp
        tn = total - tp - fp - fn
        sens, spec = _div(tp, tp + fn), _div(tn, tn + fp)
        prec = np.where(tp + fp > 0, _div(tp, tp + fp), 0.0)
        f1 = np.where(2 * tp + fp + fn > 0, _div(2 * tp, 2 * tp + fp + fn), 0.0)
        has = self.present
        if k == 2:
            out["auc"], out["pr_auc"] = aucs[:, 1], aps[:, 1]
        else:
            out["auc"], out["pr_auc"] = _row_nanmean(aucs), _row_nanmean(aps)
        out["sensitivity"] = _row_nanmean(sens[:, has])
        out["specificity"] = _row_nanmean(spec[:, has])
        out["accuracy"] = _div(tp.sum(axis=1), total[:, 0])
        out["balanced_accuracy"] = out["sensitivity"]
        out["precision"] = prec[:, has].mean(axis=1) if has.any() else np.full(b, np.nan)
        out["f1"] = f1[:, has].mean(axis=1) if has.any() else np.full(b, np.nan)
        for c, name in enumerate(self.classes):
            out[f"auc/{name}"], out[f"pr_auc/{name}"] = aucs[:, c], aps[:, c]
            out[f"sensitivity/{name}"], out[f"specificity/{name}"] = sens[:, c], spec[:, c]
        return out

    def point(self) -> dict[str, float]:
        return {k: float(v[0]) for k, v in self.compute(np.ones((len(self.y), 1))).items()}


def _row_nanmean(x: np.ndarray) -> np.ndarray:
    ok = ~np.isnan(x)
    n = ok.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.where(ok, x, 0.0).sum(axis=1) / np.maximum(n, 1), np.nan)


# ---------------------------------------------------------------- the bootstrap


@dataclass
class BootstrapResult:
    estimates: dict[str, float]  # on the sample itself
    ci: dict[str, tuple[float, float]]
    samples: dict[str, np.ndarray] = field(repr=False)  # (n_resamples,) per metric
    n_resamples: int = DEFAULT_RESAMPLES
    level: float = DEFAULT_LEVEL
    unit: str = "images"  # what was resampled: "patients" or "images"
    n_units: int = 0
    n_images: int = 0
    classes: list[str] = field(default_factory=list)

    def text(self, metric: str, digits: int = 2) -> str:
        lo, hi = self.ci.get(metric, (math.nan, math.nan))
        return format_ci(self.estimates.get(metric), lo, hi, digits)

    def table(self, digits: int = 2) -> pd.DataFrame:
        """``metric, value, lo, hi, text`` (macro metrics first, then per class)."""
        rows = [(m, self.estimates[m], *self.ci[m], self.text(m, digits)) for m in self.estimates]
        return pd.DataFrame(rows, columns=["metric", "value", "lo", "hi", "text"])

    def ci_json(self) -> dict[str, list[float | None]]:
        """``{metric: [lo, hi]}`` (null where undefined)."""
        return {m: [_none(lo), _none(hi)] for m, (lo, hi) in self.ci.items()}


def _none(x: float) -> float | None:
    return None if _nan(x) else float(x)


def bootstrap_metrics(
    y_true: np.ndarray,
    probs: np.ndarray,
    classes: Sequence[str],
    groups: Sequence[Any] | np.ndarray | None = None,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> BootstrapResult:
    """Percentile intervals of every metric (``MetricEngine.names``). ``groups``: patient ids
    (blank where unknown) to resample patients instead of images."""
    y = np.asarray(y_true, dtype=np.int64)
    engine = MetricEngine(y, probs, classes)
    resampler = Resampler.build(y, groups)
    samples = resample_metrics(engine, resampler, n_resamples, seed)
    return BootstrapResult(
        estimates=engine.point(),
        ci={m: percentile_interval(s, level) for m, s in samples.items()},
        samples=samples,
        n_resamples=n_resamples,
        level=level,
        unit=resampler.unit,
        n_units=resampler.n_units,
        n_images=len(y),
        classes=list(engine.classes),
    )


def resample_metrics(
    engine: MetricEngine | Sequence[MetricEngine], resampler: Resampler, n_resamples: int, seed: int = 0
) -> Any:
    """Metric samples over ``n_resamples`` resamples; several engines (runs on the same
    images) see the same resamples, which is what a paired comparison needs."""
    engines = [engine] if isinstance(engine, MetricEngine) else list(engine)
    n = len(resampler.unit_of_image)
    if n_resamples < 1 or n == 0:
        empty = [{m: np.full(0, np.nan) for m in e.names} for e in engines]
        return empty[0] if isinstance(engine, MetricEngine) else empty
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_ELEMENTS // max(n, 1))
    parts: list[list[dict[str, np.ndarray]]] = [[] for _ in engines]
    for start in range(0, n_resamples, chunk):
        w = resampler.counts(min(chunk, n_resamples - start), rng)
        for i, e in enumerate(engines):
            parts[i].append(e.compute(w))
    out = [{m: np.concatenate([p[m] for p in ps]) for m in ps[0]} for ps in parts]
    return out[0] if isinstance(engine, MetricEngine) else out


def percentile_interval(samples: np.ndarray, level: float = DEFAULT_LEVEL) -> tuple[float, float]:
    s = np.asarray(samples, dtype=np.float64)
    s = s[~np.isnan(s)]
    if len(s) == 0:
        return math.nan, math.nan
    a = (1 - level) / 2
    lo, hi = np.quantile(s, [a, 1 - a])
    return float(lo), float(hi)
