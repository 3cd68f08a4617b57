"""Calibration: does a predicted 0.9 come true 9 times in 10?

- **Reliability diagram** data per class (one-vs-rest: the class's probability against
  whether the image is of that class) and for the top label (the predicted class's
  probability against whether the prediction is right), in ``N_BINS`` equal-width bins.
- **ECE** (expected calibration error): the count-weighted mean gap between confidence and
  accuracy over the bins; ``ece`` is the top-label ECE (Guo et al. 2017), ``ece/<class>``
  the one-vs-rest ECE of each class.
- **Brier score** per class (``brier/<class>``: the mean squared error of the class's
  probability, as scikit-learn's ``brier_score_loss``, computed directly: its argument
  checks cost more than the arithmetic when subgroups call it dozens of times); ``brier``
  is their mean, which for two classes is the usual binary Brier score.
- **Temperature scaling**: one number T fitted on val by minimising the negative log
  likelihood of ``softmax(log p / T)``. The probabilities are all a run keeps, and
  ``softmax(log p / T)`` equals ``softmax(logits / T)`` (the log-probabilities are the logits
  shifted per image), and for a BCE run it equals ``sigmoid(logit / T)``, so fitting from the
  stored probabilities is exact. T > 1 softens an over-confident model. The argmax, hence
  accuracy, sensitivity and specificity at the argmax, never changes; T is stored with the
  run (its info and ``calibration.json`` in its folder) and applied when asked.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

N_BINS = 10
CALIBRATION_FILE = "calibration.json"
_EPS = 1e-7  # probabilities saved from float32 softmax reach exactly 0 and 1
_T_RANGE = (0.05, 20.0)


def _clean(probs: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(probs, dtype=np.float64), _EPS, 1.0)
    return p / p.sum(axis=1, keepdims=True)


def _bin_stats(confidence: np.ndarray, correct: np.ndarray, n_bins: int) -> tuple[np.ndarray, ...]:
    """Per equal-width bin: images, mean confidence, observed share (NaN when empty)."""
    b = np.clip((np.asarray(confidence) * n_bins).astype(np.int64), 0, n_bins - 1)
    count = np.bincount(b, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(b, weights=confidence, minlength=n_bins) / count
        acc = np.bincount(b, weights=correct.astype(np.float64), minlength=n_bins) / count
    return count, conf, acc


def _bins(confidence: np.ndarray, correct: np.ndarray, n_bins: int) -> pd.DataFrame:
    count, conf, acc = _bin_stats(confidence, correct, n_bins)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return pd.DataFrame(
        {
            "bin": np.arange(n_bins),
            "lower": edges[:-1],
            "upper": edges[1:],
            "confidence": conf,
            "accuracy": acc,
            "count": count,
        }
    )


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS) -> float:
    count, conf, acc = _bin_stats(confidence, correct, n_bins)
    n = count.sum()
    filled = count > 0
    return float((count[filled] * np.abs(conf[filled] - acc[filled])).sum() / n) if n else math.nan


def reliability(
    y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str], n_bins: int = N_BINS
) -> pd.DataFrame:
    """Reliability diagram data: ``curve`` (``top label`` or a class name), ``bin``, ``lower``,
    ``upper``, ``confidence`` (mean predicted probability), ``accuracy`` (observed share),
    ``count``. Empty bins have NaN confidence and accuracy."""
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    frames = [_bins(p.max(axis=1), p.argmax(axis=1) == y, n_bins).assign(curve="top label")]
    for c, name in enumerate(classes):
        frames.append(_bins(p[:, c], y == c, n_bins).assign(curve=str(name)))
    out = pd.concat(frames, ignore_index=True)
    return out[["curve", "bin", "lower", "upper", "confidence", "accuracy", "count"]]


def calibration_metrics(
    y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str], n_bins: int = N_BINS
) -> dict[str, float]:
    """``ece``, ``brier``, ``nll`` and per class ``ece/<class>``, ``brier/<class>``."""
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    out = {
        "ece": expected_calibration_error(p.max(axis=1), p.argmax(axis=1) == y, n_bins)
        if len(y)
        else math.nan
    }
    briers = []
    for c, name in enumerate(classes):
        out[f"ece/{name}"] = expected_calibration_error(p[:, c], y == c, n_bins) if len(y) else math.nan
        b = float(np.mean((np.clip(p[:, c], 0, 1) - (y == c)) ** 2)) if len(y) else math.nan
        out[f"brier/{name}"] = b
        briers.append(b)
    out["brier"] = float(np.mean(briers)) if briers else math.nan
    out["nll"] = nll(y, p)
    return out


def nll(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Mean negative log likelihood of the true class."""
    y = np.asarray(y_true, dtype=np.int64)
    if len(y) == 0:
        return math.nan
    p = _clean(probs)
    return float(-np.log(p[np.arange(len(y)), y]).mean())


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log p / T)``."""
    z = np.log(_clean(probs)) / float(temperature)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(y_true: np.ndarray, probs: np.ndarray) -> float:
    """The T in ``_T_RANGE`` minimising the NLL of ``softmax(log p / T)`` (a bounded 1-D
    search on log T: the NLL is smooth and has one minimum there)."""
    from scipy.optimize import minimize_scalar

    y = np.asarray(y_true, dtype=np.int64)
    logp = np.log(_clean(probs))
    rows = np.arange(len(y))

    def loss(log_t: float) -> float:
        z = logp / math.exp(log_t)
        z -= z.max(axis=1, keepdims=True)
        return float(-(z[rows, y] - np.log(np.exp(z).sum(axis=1))).mean())

    lo, hi = (math.log(v) for v in _T_RANGE)
    res = minimize_scalar(loss, bounds=(lo, hi), method="bounded", options={"xatol": 1e-4})
    return float(math.exp(res.x))


@dataclass
class TemperatureFit:
    temperature: float
    fitted_on: str
    n_images: int
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float

    def to_json(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def calibrate(y_val: np.ndarray, probs_val: np.ndarray, classes: Sequence[str]) -> TemperatureFit:
    t = fit_temperature(y_val, probs_val)
    after = apply_temperature(probs_val, t)
    before_m = calibration_metrics(y_val, probs_val, classes)
    after_m = calibration_metrics(y_val, after, classes)
    return TemperatureFit(
        t, "val", int(len(y_val)), before_m["nll"], after_m["nll"], before_m["ece"], after_m["ece"]
    )


# ---------------------------------------------------------------- stored with the run


def save_temperature(
    run_id: str, fit: TemperatureFit, workspace: str | os.PathLike[str] | None = None, store: Any = None
) -> None:
    """Write ``calibration.json`` in the run's folder and ``temperature`` in its info."""
    from core.fileio import atomic_write_json
    from core.runs import run_dir
    from core.runs.store import RunStore

    atomic_write_json(run_dir(run_id, workspace) / CALIBRATION_FILE, fit.to_json())
    (store or RunStore(workspace=workspace)).set_info(
        run_id, temperature=fit.temperature, calibration=fit.to_json()
    )


def load_temperature(run_id: str, workspace: str | os.PathLike[str] | None = None) -> TemperatureFit | None:
    """The stored fit of a run, or None."""
    import json

    from core.runs import run_dir

    try:
        d = json.loads((run_dir(run_id, workspace) / CALIBRATION_FILE).read_text())
        return TemperatureFit(**{k: d[k] for k in TemperatureFit.__dataclass_fields__})
    except (OSError, ValueError, KeyError, TypeError):
        return None
