"""Choosing what to explain: a run's predictions on a split, filtered and sorted so that its
false positives and false negatives, most confident first, are one click away."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

OUTCOMES = ("all", "correct", "wrong")
ERROR_KINDS = {"fp": "false positives", "fn": "false negatives"}


def load_predictions(run_id: str, split: str, workspace: Any = None) -> pd.DataFrame | None:
    """The run's ``predictions_<split>.csv`` (written when it finished), or None."""
    from core.runs import run_dir

    path = run_dir(run_id, workspace) / f"predictions_{split}.csv"
    if not path.exists():
        return None
    return pd.read_csv(path)


def prob_columns(classes: Sequence[str]) -> list[str]:
    return [f"prob/{c}" for c in classes]


def with_confidence(df: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    """Adds ``confidence`` (probability of the predicted class) and ``correct``."""
    probs = df[prob_columns(classes)].to_numpy(dtype=float)
    return df.assign(confidence=probs.max(axis=1), correct=df["target"].to_numpy() == df["pred"].to_numpy())


def filter_predictions(
    df: pd.DataFrame,
    classes: Sequence[str],
    true_classes: Sequence[str] = (),
    pred_classes: Sequence[str] = (),
    outcome: str = "all",
) -> pd.DataFrame:
    """Rows matching the filters, most confident first."""
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
    out = with_confidence(df, classes)
    if true_classes:
        out = out[out["true_class"].isin(true_classes)]
    if pred_classes:
        out = out[out["pred_class"].isin(pred_classes)]
    if outcome != "all":
        out = out[out["correct"] == (outcome == "correct")]
    return out.sort_values("confidence", ascending=False, kind="stable").reset_index(drop=True)


def errors_of(df: pd.DataFrame, classes: Sequence[str], positive: str, kind: str) -> pd.DataFrame:
    """False positives (predicted ``positive``, truly something else) sorted by the positive
    probability, highest first; or false negatives (truly ``positive``, predicted something
    else) sorted by the positive probability, lowest first: the most confident mistakes."""
    if kind not in ERROR_KINDS:
        raise ValueError(f"kind must be one of {tuple(ERROR_KINDS)}, got {kind!r}")
    out = with_confidence(df, classes)
    p = out[f"prob/{positive}"]
    if kind == "fp":
        out = out[(out["pred_class"] == positive) & (out["true_class"] != positive)]
        order = np.argsort(-p[out.index].to_numpy(), kind="stable")
    else:
        out = out[(out["true_class"] == positive) & (out["pred_class"] != positive)]
        order = np.argsort(p[out.index].to_numpy(), kind="stable")
    return out.iloc[order].reset_index(drop=True)


def box_scores(cam: np.ndarray, boxes: Sequence[Sequence[float]], width: int, height: int) -> tuple[float, bool] | None:
    """Energy in box and pointing game of a map over the model input for boxes given in
    pixels of the original (``width`` x ``height``) image; None without boxes."""
    from core.explain import scores as sc

    if not boxes:
        return None
    mapped = sc.boxes_to_map(boxes, width, height, cam.shape[1], cam.shape[0])
    return sc.energy_in_box(cam, mapped), bool(sc.pointing_game(cam, mapped))
