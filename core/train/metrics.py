"""Classification metrics a clinician reads: sensitivity and specificity per class, ROC-AUC,
PR-AUC, balanced accuracy, F1, the confusion matrix. scikit-learn does the arithmetic.

``probs`` is always (N, K) class probabilities (a single-logit model's sigmoid p becomes
[1-p, p]), so every metric works the same for BCE and softmax runs.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

# Metrics where lower is better; everything else is higher-is-better.
LOWER_IS_BETTER = frozenset({"loss"})


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Scalar metrics (flat dict of floats, per class as ``name/class``) plus
    ``confusion_matrix`` (list of lists, rows = true class)."""
    from sklearn.metrics import (
        average_precision_score,
        balanced_accuracy_score,
        confusion_matrix,
        precision_recall_fscore_support,
        roc_auc_score,
    )

    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    k = len(classes)
    labels = list(range(k))
    y_pred = probs.argmax(axis=1)
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    out: dict[str, Any] = {}
    n = len(y_true)
    out["accuracy"] = float((y_pred == y_true).mean()) if n else math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        present = np.unique(y_true)
        out["balanced_accuracy"] = float(balanced_accuracy_score(y_true, y_pred)) if n else math.nan
        prec, rec, f1, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    tp = np.diag(cm).astype(float)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    tn = cm.sum() - tp - fp - fn
    spec = np.divide(tn, tn + fp, out=np.full(k, np.nan), where=(tn + fp) > 0)
    sens = np.divide(tp, tp + fn, out=np.full(k, np.nan), where=(tp + fn) > 0)
    has = np.isin(labels, present)
    out["sensitivity"] = _nanmean(sens[has])
    out["specificity"] = _nanmean(spec[has])
    out["precision"] = float(np.mean(prec[has])) if has.any() else math.nan
    out["f1"] = float(np.mean(f1[has])) if has.any() else math.nan
    aucs = np.full(k, np.nan)
    aps = np.full(k, np.nan)
    for c in labels:
        pos = y_true == c
        if 0 < pos.sum() < n:
            aucs[c] = roc_auc_score(pos, probs[:, c])
            aps[c] = average_precision_score(pos, probs[:, c])
    if k == 2:
        # Binary: the AUC of the positive class (index 1) is the one everybody quotes.
        out["auc"], out["pr_auc"] = float(aucs[1]), float(aps[1])
    else:
        out["auc"], out["pr_auc"] = _nanmean(aucs), _nanmean(aps)
    for c, name in enumerate(classes):
        out[f"sensitivity/{name}"] = float(sens[c])
        out[f"specificity/{name}"] = float(spec[c])
        out[f"precision/{name}"] = float(prec[c])
        out[f"f1/{name}"] = float(f1[c])
        out[f"auc/{name}"] = float(aucs[c])
    out["confusion_matrix"] = cm.tolist()
    return out


def _nanmean(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(x.mean()) if len(x) else math.nan


def scalar_items(metrics: dict[str, Any]) -> dict[str, float]:
    """The metric rows to store (drops the confusion matrix and NaNs)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not math.isnan(float(v))}


def is_better(name: str, value: float, best: float | None) -> bool:
    if value is None or math.isnan(value):
        return False
    if best is None or math.isnan(best):
        return True
    return value < best if name in LOWER_IS_BETTER else value > best
