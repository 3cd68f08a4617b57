"""Shortcut probe: can the label be predicted WITHOUT looking at the lung?

Two cross-validated scikit-learn models, each on one kind of column of the dataset index:

- **metadata**: the source's columns (age, sex, view, modality, manufacturer, hospital, ...);
- **file properties**: format, colour mode (L / RGB / RGBA / palette, or the DICOM
  photometric interpretation), bit depth, width, height, file size, and the DICOM header's
  technical fields when the scan read them.

A model that reaches a macro one-vs-rest ROC-AUC above ``FLAG_AUC`` (0.7) from either kind,
or tells one class (of ``MIN_CLASS_GROUPS`` patients or more) from the rest with an AUC
above ``FLAG_CLASS_AUC`` (0.9), flags the dataset: a classifier trained on the pixels can
learn the same shortcut (a hospital, a view or a file format standing in for the disease),
and its test score will not hold elsewhere.

The model: every column becomes categories (numbers with more than ``EXACT_MAX`` values
fall into up to ``BINS`` quantile bins, text keeps its ``TOP_VALUES`` commonest values,
blanks are a category of their own), one-hot encoded, into a logistic regression. Binning
lets a linear model follow any shape of a single column (a width of exactly 512 for one
class), it fits 30,000 rows in a fraction of a second (gradient boosting took ~20x longer on
2 busy cores), and it misses only interactions between columns. Folds keep every patient's
images together and are stratified by class (``grouped_folds``: scikit-learn's
``StratifiedGroupKFold`` took 16 s on 26,000 patients).

Two numbers explain a flag, per column: ``auc_alone`` (the cross-fitted AUC of the column
by itself: its per-category class shares learnt on the other folds) and ``importance``
(how much the model's AUC drops when the column is shuffled within each held-out fold).
Shuffling one of two redundant columns (file size and format) drops little; ``auc_alone``
still shows each of them carries the label.

Columns left out, with the reason in ``excluded``: the label and names like it (``finding``,
``diagnosis``, ``class``: they ARE the label, not a shortcut to it), the split, ids and
free text (a patient id cannot generalise across grouped folds), and constant columns.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from core.progress import ProgressFn, no_progress

FLAG_AUC = 0.7
# One class told apart from its files alone is a shortcut even when the macro AUC over many
# classes dilutes it (3 classes, one of them re-saved as JPEG: macro ~0.73, that class 1.0).
FLAG_CLASS_AUC = 0.9
MIN_CLASS_GROUPS = 10  # smaller classes reach a one-vs-rest AUC of 0.9 by chance too often
N_SPLITS = 5
BINS = 10
EXACT_MAX = 12  # numeric columns with at most this many values keep each value
TOP_VALUES = 30
MISSING = "(missing)"
OTHER = "(other)"
FILE_COLUMNS = ("file_format", "file_mode", "file_bit_depth", "file_width", "file_height", "file_bytes")
# DICOM header fields that describe the file, not the patient or the visit.
FILE_HEADER_COLUMNS = (
    "PhotometricInterpretation",
    "BitsStored",
    "BitsAllocated",
    "Rows",
    "Columns",
    "TransferSyntax",
    "NumberOfFrames",
)
FIXED_COLUMNS = ("path", "label", "split", "patient_id")
_LABEL_LIKE = re.compile(r"label|finding|diagnos|target|class|category|outcome", re.I)
_ID_LIKE = re.compile(r"(^|[^a-z])(id|uid)$|instanceuid$|patientid$|accession|filename|^file$|path", re.I)


@dataclass
class FeatureScore:
    feature: str
    probe: str  # "metadata" or "file_properties"
    auc_alone: float | None
    importance: float | None  # drop of the model's AUC when the column is shuffled

    def to_json(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "probe": self.probe,
            "auc_alone": _round(self.auc_alone),
            "importance": _round(self.importance),
        }


@dataclass
class ProbeSide:
    name: str
    auc: float | None
    features: list[str]
    scores: list[FeatureScore] = field(default_factory=list)
    note: str = ""
    class_auc: dict[str, float] = field(default_factory=dict)  # one-vs-rest, classes large enough
    flagged_classes: list[str] = field(default_factory=list)

    @property
    def flagged(self) -> bool:
        return (self.auc is not None and self.auc > FLAG_AUC) or bool(self.flagged_classes)


@dataclass
class ProbeResult:
    metadata: ProbeSide
    file_properties: ProbeSide
    n_images: int
    n_groups: int
    grouped_by_patient: bool
    classes: list[str]
    n_folds: int
    excluded: dict[str, str] = field(default_factory=dict)

    @property
    def flagged(self) -> bool:
        return self.metadata.flagged or self.file_properties.flagged

    @property
    def top_features(self) -> list[FeatureScore]:
        """The columns that carry the label, strongest first (``auc_alone`` > 0.6, or all
        of a flagged side's columns ranked when none reaches it)."""
        scores = self.metadata.scores + self.file_properties.scores
        ranked = sorted(scores, key=lambda s: -(s.auc_alone or 0.0))
        strong = [s for s in ranked if (s.auc_alone or 0) > 0.6]
        return strong or [s for s in ranked if s.probe in self._flagged_sides()][:5]

    def _flagged_sides(self) -> set[str]:
        return {s.name for s in (self.metadata, self.file_properties) if s.flagged}

    @property
    def summary(self) -> str:
        """One line for a person."""
        parts = []
        for side, words in ((self.metadata, "metadata"), (self.file_properties, "file properties")):
            parts.append(f"{words} {side.auc:.2f}" if side.auc is not None else f"{words} n/a")
        if self.metadata.auc is None and self.file_properties.auc is None and not self.flagged:
            notes = [n for n in (self.metadata.note, self.file_properties.note) if n]
            why = f": {notes[0]}" if notes else ""
            return f"not checked{why} ({self.n_images} images)"
        verdict = "SHORTCUT SUSPECTED" if self.flagged else "no shortcut found"
        tops = ", ".join(s.feature for s in self.top_features[:3])
        carried = f" (carried by {tops})" if self.flagged and tops else ""
        singled = sorted(set(self.metadata.flagged_classes) | set(self.file_properties.flagged_classes))
        if singled:
            carried += f"; class {', '.join(singled)} told apart with one-vs-rest AUC > {FLAG_CLASS_AUC}"
        unit = "patient-grouped" if self.grouped_by_patient else "image"
        return (
            f"{verdict}: label predicted without pixels with ROC-AUC {'; '.join(parts)}{carried} "
            f"({self.n_folds}-fold {unit} CV, {self.n_images} images; flag above {FLAG_AUC})"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "metadata_auc": _round(self.metadata.auc),
            "file_properties_auc": _round(self.file_properties.auc),
            "top_features": [s.to_json() for s in self.top_features],
            "flagged": self.flagged,
            "threshold": FLAG_AUC,
            "class_threshold": FLAG_CLASS_AUC,
            "metadata_class_auc": {c: _round(v) for c, v in self.metadata.class_auc.items()},
            "file_properties_class_auc": {c: _round(v) for c, v in self.file_properties.class_auc.items()},
            "flagged_classes": {
                "metadata": self.metadata.flagged_classes,
                "file_properties": self.file_properties.flagged_classes,
            },
            "n_images": self.n_images,
            "n_patients": self.n_groups if self.grouped_by_patient else None,
            "n_folds": self.n_folds,
            "classes": self.classes,
            "metadata_features": self.metadata.features,
            "file_property_features": self.file_properties.features,
            "features": [s.to_json() for s in self.metadata.scores + self.file_properties.scores],
            "excluded": self.excluded,
            "notes": [n for n in (self.metadata.note, self.file_properties.note) if n],
            "summary": self.summary,
        }


def _round(x: float | None, digits: int = 4) -> float | None:
    return None if x is None or x != x else round(float(x), digits)


# ---------------------------------------------------------------- columns


def split_columns(
    index: pd.DataFrame, label_column: str = "label", exclude: Sequence[str] = ()
) -> tuple[list[str], list[str], dict[str, str], dict[str, Any]]:
    """``(metadata columns, file-property columns, {left-out column: reason}, {column: its
    core.explore.ColumnInfo})``."""
    from core.explore import column_info

    meta, files, excluded, infos = [], [], {}, {}
    for c in index.columns:
        name = str(c)
        if name in FIXED_COLUMNS or name in ("class_name", "target") or name == label_column:
            if name not in ("path", "class_name", "target"):
                excluded[name] = "the label, split or patient id"
            continue
        if name in exclude:
            excluded[name] = "left out as asked"
            continue
        is_file = name in FILE_COLUMNS or name in FILE_HEADER_COLUMNS
        if not is_file and _LABEL_LIKE.search(name):
            excluded[name] = "named like the label: it is the label, not a shortcut to it"
            continue
        if _ID_LIKE.search(name):
            excluded[name] = "an identifier"
            continue
        info = infos[name] = column_info(index[c])
        if info.kind == "text":
            excluded[name] = f"free text or ids ({info.n_unique} distinct values)"
            continue
        blanks = info.n_values < len(index)
        if info.n_unique + int(blanks) < 2:
            excluded[name] = "the same value everywhere"
            continue
        (files if is_file else meta).append(name)
    return meta, files, excluded, infos


def encode_column(col: pd.Series, info: Any = None) -> tuple[np.ndarray, list[str]]:
    """Category codes (0..m-1) of a column and their names: exact values, quantile bins of
    a many-valued number, the commonest texts, blanks as ``(missing)``."""
    from core.explore import _as_numbers, blank, column_info

    missing = blank(col).to_numpy()
    info = info or column_info(col)
    if info.kind == "numeric" and info.n_unique > EXACT_MAX:
        x = _as_numbers(col).to_numpy(dtype="float64")
        ok = ~np.isnan(x)
        edges = np.unique(np.quantile(x[ok], np.linspace(0, 1, BINS + 1)[1:-1])) if ok.any() else np.array([])
        codes = np.searchsorted(edges, x, side="right")
        lows = np.concatenate([[-np.inf], edges])
        names = [
            f">= {lo:g}" if np.isfinite(lo) else f"< {edges[0]:g}" if len(edges) else "all" for lo in lows
        ]
        codes = np.where(ok, codes, len(names))
        return codes.astype(np.int64), names + [MISSING]
    if info.kind == "numeric":
        text = _as_numbers(col).map(lambda v: f"{v:g}", na_action="ignore")
        text = text.where(~missing, MISSING).fillna(OTHER).astype(str)
    else:
        text = col.astype("string").str.strip().fillna("").where(~missing, MISSING).astype(str)
    counts = text.value_counts()
    keep = list(counts.index[:TOP_VALUES])
    text = text.where(text.isin(keep), OTHER)
    codes, names = pd.factorize(text, sort=True)
    return codes.astype(np.int64), [str(n) for n in names]


# ---------------------------------------------------------------- folds


def grouped_folds(y: np.ndarray, groups: np.ndarray, n_splits: int, seed: int = 0) -> np.ndarray:
    """A fold per row: every group (patient) in one fold, folds stratified by the group's
    majority class and of near-equal image counts. Vectorised: within each class the
    shuffled groups are cut into ``n_splits`` runs of equal cumulative size."""
    rng = np.random.default_rng(seed)
    g_codes, g_names = pd.factorize(groups, sort=False)
    k = int(y.max()) + 1
    counts = np.bincount(g_codes * k + y, minlength=len(g_names) * k).reshape(len(g_names), k)
    size, major = counts.sum(axis=1), counts.argmax(axis=1)
    fold_of_group = np.empty(len(g_names), dtype=np.int64)
    for c in range(k):
        members = np.flatnonzero(major == c)
        members = members[rng.permutation(len(members))]
        cum = np.cumsum(size[members]) - size[members] / 2
        total = max(float(size[members].sum()), 1.0)
        fold_of_group[members] = np.minimum((cum / total * n_splits).astype(np.int64), n_splits - 1)
    return fold_of_group[g_codes]


def _n_folds(y: np.ndarray, groups: np.ndarray) -> int:
    """Up to ``N_SPLITS`` folds; fewer when a class has fewer patients than that."""
    per_class = pd.DataFrame({"y": y, "g": groups}).groupby("y")["g"].nunique()
    return int(min(N_SPLITS, per_class.min())) if len(per_class) else 0


# ---------------------------------------------------------------- models


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    """Macro one-vs-rest ROC-AUC (the positive class's for two classes), from ranks: the
    same number as ``roc_auc_score(multi_class="ovr")`` without its checks, which cost more
    than the arithmetic over the probe's ~50 calls."""
    from scipy.stats import rankdata

    aucs = []
    for c in [1] if p.shape[1] == 2 else range(p.shape[1]):
        pos = y == c
        n_pos, n_neg = int(pos.sum()), int((~pos).sum())
        if n_pos and n_neg:
            ranks = rankdata(p[:, c])
            aucs.append((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return float(np.mean(aucs)) if aucs else float("nan")


def _design(codes: list[np.ndarray], sizes: list[int], rows: np.ndarray | None = None) -> Any:
    """The one-hot matrix (sparse) of the columns' codes."""
    from scipy import sparse

    offsets = np.concatenate([[0], np.cumsum(sizes)])
    cols = np.stack([c if rows is None else c[rows] for c in codes], axis=1) + offsets[:-1]
    n = cols.shape[0]
    data = np.ones(cols.size)
    return sparse.csr_matrix(
        (data, (np.repeat(np.arange(n), cols.shape[1]), cols.ravel())), shape=(n, int(offsets[-1]))
    )


def _alone_auc(code: np.ndarray, m: int, y: np.ndarray, folds: np.ndarray, k: int) -> float:
    """Cross-fitted AUC of one column alone: each category's class shares (add-one
    smoothed) from the other folds."""
    p = np.empty((len(y), k))
    for f in np.unique(folds):
        test = folds == f
        table = np.bincount(code[~test] * k + y[~test], minlength=m * k).reshape(m, k) + 1.0
        table /= table.sum(axis=1, keepdims=True)
        p[test] = table[code[test]]
    return _auc(y, p)


def _class_aucs(y: np.ndarray, p: np.ndarray, classes: list[str], groups: np.ndarray) -> dict[str, float]:
    out = {}
    for c, name in enumerate(classes):
        pos = y == c
        if len(np.unique(groups[pos])) >= MIN_CLASS_GROUPS and 0 < pos.sum() < len(y):
            out[name] = _auc(pos.astype(np.int64), np.stack([1 - p[:, c], p[:, c]], axis=1))
    return out


def _probe_side(
    name: str,
    frame: pd.DataFrame,
    columns: list[str],
    y: np.ndarray,
    folds: np.ndarray,
    classes: list[str],
    groups: np.ndarray,
    seed: int,
    infos: dict[str, Any],
) -> ProbeSide:
    from sklearn.linear_model import LogisticRegression

    k = len(classes)
    if not columns:
        return ProbeSide(name, None, [], note=f"no {name.replace('_', ' ')} columns to probe")
    encoded = [encode_column(frame[c], infos.get(c)) for c in columns]
    codes = [e[0] for e in encoded]
    sizes = [len(e[1]) for e in encoded]
    x = _design(codes, sizes)
    oof = np.zeros((len(y), k))
    models = {}
    for f in np.unique(folds):
        test = folds == f
        model = LogisticRegression(C=1.0, max_iter=300)
        model.fit(x[~test], y[~test])
        models[f] = model
        oof[np.ix_(test, model.classes_)] = model.predict_proba(x[test])
    auc = _auc(y, oof)
    class_auc = _class_aucs(y, oof, classes, groups) if k > 2 else {}
    rng = np.random.default_rng(seed)
    scores = []
    for j, col in enumerate(columns):
        shuffled = oof.copy()
        for f, model in models.items():
            rows = np.flatnonzero(folds == f)
            perm = [c if i != j else c.copy() for i, c in enumerate(codes)]
            perm[j][rows] = perm[j][rows[rng.permutation(len(rows))]]
            shuffled[np.ix_(rows, model.classes_)] = model.predict_proba(_design(perm, sizes, rows))
        scores.append(
            FeatureScore(col, name, _alone_auc(codes[j], sizes[j], y, folds, k), auc - _auc(y, shuffled))
        )
    scores.sort(key=lambda s: -(s.auc_alone or 0.0))
    flagged = [c for c, v in class_auc.items() if v > FLAG_CLASS_AUC]
    return ProbeSide(name, auc, list(columns), scores, class_auc=class_auc, flagged_classes=flagged)


# ---------------------------------------------------------------- entry points


def probe_index(
    index: pd.DataFrame,
    label_column: str = "label",
    *,
    seed: int = 0,
    exclude: Sequence[str] = (),
    progress: ProgressFn = no_progress,
) -> ProbeResult:
    """Probe an index (or an applied task's table: pass ``label_column="class_name"``)."""
    from threadpoolctl import threadpool_limits

    from core.errors import DataError
    from core.explore import blank

    if label_column not in index.columns:
        raise DataError(f"label column {label_column!r} is not in the index")
    rows = index[~blank(index[label_column]).to_numpy()].reset_index(drop=True)
    y_names = rows[label_column].astype(str).str.strip()
    classes = sorted(y_names.unique())
    if len(classes) < 2:
        raise DataError(
            f"the shortcut probe needs two classes or more; column {label_column!r} has {classes}"
        )
    y = pd.Categorical(y_names, categories=classes).codes.astype(np.int64)
    groups = _groups(rows)
    grouped = bool(len(np.unique(groups)) < len(rows))
    n_folds = _n_folds(y, groups)
    meta_cols, file_cols, excluded, infos = split_columns(rows, label_column, exclude)
    if n_folds < 2:
        note = "too few patients in a class for cross-validation (each class needs two or more)"
        side = lambda n, c: ProbeSide(n, None, c, note=note)  # noqa: E731
        return ProbeResult(
            side("metadata", meta_cols),
            side("file_properties", file_cols),
            len(rows),
            len(np.unique(groups)),
            grouped,
            classes,
            n_folds,
            excluded,
        )
    folds = grouped_folds(y, groups, n_folds, seed)
    # One BLAS thread: on a busy 2-core machine OpenBLAS's spinning threads made the
    # logistic regressions 5x slower, and the problems are small.
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence notes of a probe model change nothing
        progress(0, 2, "probing metadata")
        meta = _probe_side("metadata", rows, meta_cols, y, folds, classes, groups, seed, infos)
        progress(1, 2, "probing file properties")
        files = _probe_side("file_properties", rows, file_cols, y, folds, classes, groups, seed, infos)
    progress(2, 2, "")
    return ProbeResult(meta, files, len(rows), len(np.unique(groups)), grouped, classes, n_folds, excluded)


def _groups(rows: pd.DataFrame) -> np.ndarray:
    if "patient_id" not in rows.columns:
        return np.arange(len(rows)).astype(str)
    pid = rows["patient_id"].astype("string").str.strip().fillna("")
    own = "\x00row" + pd.Series(np.arange(len(rows))).astype(str)
    return np.asarray(pid.where(pid != "", own).to_numpy(dtype=object)).astype(str)


def probe_dataset(
    path: str | os.PathLike[str],
    format: str = "auto",
    *,
    options: dict[str, Any] | None = None,
    task: Any = None,
    workspace: Any = None,
    seed: int = 0,
    progress: ProgressFn = no_progress,
) -> ProbeResult:
    """Scan ``path`` (cached) and probe it; ``task`` (a ``Task``, its dict, or the name of a
    saved task) decides the label: its merged classes, its rows."""
    from core.data.index import scan
    from core.data.tasks import Task, apply_task, load_task

    report = scan(path, format, options=options, workspace=workspace, progress=progress)
    if task is None:
        return probe_index(report.index, "label", seed=seed, progress=progress)
    if isinstance(task, str):
        task, _ = load_task(task, workspace)
    elif isinstance(task, dict):
        task = Task.from_dict(task)
    table = apply_task(report.index, task)
    # The task's own label column is the label too, whatever its name.
    return probe_index(
        table, "class_name", seed=seed, exclude=(task.label_column, "label"), progress=progress
    )
