"""Figures of training runs: metric curves of several runs overlaid, confusion matrices, ROC
and precision-recall curves. Pure functions from metric rows and prediction tables to plotly
figures; traces are plain dicts and each figure's layout is set once (``core.plots.style``).

Curves: one colour per run, one dash per split (val solid, train dotted, test as markers),
a star at each run's best epoch, optional TensorBoard-style smoothing (a debiased
exponential moving average) and a log y axis.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from core.plots.style import COLORS, GRID, base_layout, empty_figure, figure

X_AXES = {"epoch": "epoch", "step": "step", "time": "minutes since the run started"}
DASH = {"val": "solid", "train": "dot"}
SMOOTHED_RAW_OPACITY = 0.25
FEW_POINTS = 30
PROB_PREFIX = "prob/"


@dataclass(frozen=True)
class CurveRun:
    """How one run appears in the figures."""

    id: str
    label: str
    color: str
    best_epoch: int | None = None
    start: float | None = None  # Unix time the wall-time axis counts from


def _figure(traces: list[dict], legend: dict | None = None, **layout: object) -> go.Figure:
    """``style.figure`` with the legend's placement replaced (not merged) by ``legend``."""
    if not legend:
        return figure(traces, **layout)
    full = base_layout(**layout)
    full["legend"] = {**full["legend"], **legend}
    return go.Figure(data=traces, layout=full)


def run_colors(run_ids: Sequence[str]) -> dict[str, str]:
    """A colour per run in the given order (the palette repeats past its length)."""
    return {r: COLORS[i % len(COLORS)] for i, r in enumerate(run_ids)}


# -- smoothing -----------------------------------------------------------------------------------


def ema(values: Sequence[float] | np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard's smoothing: an exponential moving average started at 0 and divided by
    ``1 - weight**n`` (n = finite points so far), so the first points are not pulled towards
    0. Non-finite values pass through and do not enter the average. ``weight`` in [0, 1)."""
    v = np.asarray(values, dtype=np.float64)
    if weight <= 0 or v.size == 0:
        return v.copy()
    if not 0 <= weight < 1:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    out = np.empty_like(v)
    last, n = 0.0, 0
    for i, x in enumerate(v):
        if not math.isfinite(x):
            out[i] = x
            continue
        last = last * weight + (1.0 - weight) * x
        n += 1
        out[i] = last / (1.0 - weight**n)
    return out


# -- curves ----------------------------------------------------------------------------------------


def curves_figure(
    metrics: pd.DataFrame,
    metric: str,
    runs: Sequence[CurveRun],
    *,
    splits: Sequence[str] = ("train", "val"),
    x: str = "epoch",
    smoothing: float = 0.0,
    log_y: bool = False,
    height: int = 400,
) -> go.Figure:
    """``metric`` of every run in ``runs`` over ``x`` ("epoch", "step" or "time", minutes
    since the run started). ``metrics`` holds the runs' metric rows (the store's columns,
    several runs in one table). The star marks each run's best epoch on its val curve (else
    on the first split shown)."""
    if x not in X_AXES:
        raise ValueError(f"x axis {x!r} unknown; valid: {', '.join(X_AXES)}")
    # One filter and one grouping for all runs: filtering per run costs ~10 ms each.
    rows = metrics[
        (metrics["name"] == metric) & metrics["split"].isin(list(splits)) & metrics["value"].notna()
    ]
    groups = rows.groupby(["run_id", "split"], sort=False).indices if not rows.empty else {}
    cols = {c: rows[c].to_numpy() for c in ("epoch", "step", "value", "time")}
    order = sorted(splits, key=lambda s: (s != "val", s))
    traces: list[dict] = []
    for run in runs:
        shown = marked = False
        for split in order:
            at = groups.get((run.id, split))
            if at is None:
                continue
            series = {c: v[at] for c, v in cols.items()}
            xs = _x_values(series, x, run.start)
            traces += _split_traces(run, split, metric, xs, series["value"], smoothing, x, legend=not shown)
            shown = True
            if not marked and run.best_epoch is not None and split != "test":
                marker = _best_marker(run, series, xs, metric)
                if marker is not None:
                    traces.append(marker)
                    marked = True
    if not traces:
        return empty_figure(f"No {metric} values yet for these runs", height=height)
    styles = " · ".join(
        f"{s} {'dotted' if s == 'train' else 'markers' if s == 'test' else 'solid'}" for s in order
    )
    xaxis = dict(gridcolor=GRID)
    if x == "epoch":  # whole epochs only; about ten ticks
        xaxis.update(tick0=0, dtick=max(1, math.ceil(float(cols["epoch"].max()) / 10)))
    # The legend goes under the plot: with several runs it wraps, and on top it would cover the title.
    legend = dict(groupclick="togglegroup", orientation="h", yanchor="top", y=-0.2, xanchor="left", x=0)
    return _figure(
        traces,
        legend=legend,
        title=f"{metric} <span style='font-size:12px;color:#666'>({styles}; ★ best epoch)</span>",
        height=height,
        x_title=X_AXES[x],
        xaxis=xaxis,
        yaxis=dict(type="log" if log_y else "linear", title=dict(text=metric), gridcolor=GRID),
        hovermode="closest",
    )


def _x_values(series: Mapping[str, np.ndarray], x: str, start: float | None) -> np.ndarray:
    if x == "time":
        t = series["time"].astype(np.float64)
        t0 = start if start is not None and math.isfinite(start) else float(t.min())
        return (t - t0) / 60.0
    if x == "epoch":
        return epoch_positions(series["epoch"], series["step"])
    return series[x]


def epoch_positions(epoch: np.ndarray, step: np.ndarray) -> np.ndarray:
    """x positions on the epoch axis: an epoch-level row sits at its epoch; a metric logged
    at several steps of an epoch (``batch_loss``) is spread over that epoch in step order,
    the last at the epoch's number, instead of stacking in a vertical line at one x. Rows of
    the same epoch and step (an epoch repeated after a resume) keep one position."""
    epoch = np.asarray(epoch, dtype=np.float64)
    if len(epoch) == 0:
        return epoch
    pairs, inverse = np.unique(np.column_stack([epoch, np.asarray(step, dtype=np.float64)]), axis=0,
                               return_inverse=True)  # fmt: skip
    values, first, counts = np.unique(pairs[:, 0], return_index=True, return_counts=True)
    group = np.searchsorted(values, pairs[:, 0])
    rank = np.arange(len(pairs)) - first[group] + 1
    position = pairs[:, 0] - 1 + rank / counts[group]
    return position[inverse.ravel()]


def _split_traces(
    run: CurveRun,
    split: str,
    metric: str,
    xs: np.ndarray,
    ys: np.ndarray,
    smoothing: float,
    x: str,
    legend: bool,
) -> list[dict]:
    # numpy arrays, not lists: plotly checks a list element by element.
    hover = f"{run.label} · {split}<br>{x} %{{x:.4g}}<br>{metric} %{{y:.4g}}<extra></extra>"
    common = dict(type="scatter", legendgroup=run.id, name=run.label, x=xs)
    if split == "test":
        return [
            dict(
                common,
                y=ys,
                mode="markers",
                showlegend=legend,
                hovertemplate=hover,
                marker=dict(color=run.color, symbol="x", size=9),
            )
        ]
    line = dict(color=run.color, dash=DASH.get(split, "dash"), width=2)
    if smoothing <= 0:
        # Markers while a curve is short: a run's first epoch is a single point, invisible as a line.
        mode = "lines+markers" if len(xs) <= FEW_POINTS else "lines"
        return [
            dict(
                common,
                y=ys,
                mode=mode,
                line=line,
                marker=dict(size=5, color=run.color),
                showlegend=legend,
                hovertemplate=hover,
            )
        ]
    raw = dict(
        common,
        y=ys,
        mode="lines",
        line=dict(line, width=1),
        opacity=SMOOTHED_RAW_OPACITY,
        showlegend=False,
        hoverinfo="skip",
    )
    smooth = dict(
        common,
        y=ema(ys, smoothing),
        mode="lines",
        line=line,
        showlegend=legend,
        hovertemplate=hover.replace("<extra>", " (smoothed)<extra>"),
    )
    return [raw, smooth]


def _best_marker(run: CurveRun, series: Mapping[str, np.ndarray], xs: np.ndarray, metric: str) -> dict | None:
    at = np.flatnonzero(series["epoch"] == run.best_epoch)
    if at.size == 0:
        return None
    i = int(at[-1])  # a resumed run may repeat an epoch: its last value is the one kept
    value = float(series["value"][i])
    return dict(
        type="scatter",
        mode="markers",
        x=[float(xs[i])],
        y=[value],
        legendgroup=run.id,
        showlegend=False,
        marker=dict(symbol="star", size=14, color=run.color, line=dict(color="white", width=1)),
        hovertemplate=f"{run.label}<br>best epoch {run.best_epoch}<br>{metric} {value:.4g}<extra></extra>",
    )


# -- predictions: confusion matrix, ROC, PR -------------------------------------------------------------


def prediction_classes(pred: pd.DataFrame) -> list[str]:
    """Class names of a predictions table, in class-index order (its ``prob/<class>`` columns)."""
    return [c[len(PROB_PREFIX) :] for c in pred.columns if c.startswith(PROB_PREFIX)]


def confusion_counts(pred: pd.DataFrame, n_classes: int) -> np.ndarray:
    """(K, K) counts, rows = true class, columns = predicted class."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (pred["target"].to_numpy(dtype=np.int64), pred["pred"].to_numpy(dtype=np.int64)), 1)
    return cm


def confusion_figure(
    cm: np.ndarray | Sequence[Sequence[int]], classes: Sequence[str], title: str = "", height: int = 320
) -> go.Figure:
    """Counts and row shares (the share of each true class predicted as each class: the
    diagonal is each class's sensitivity); colour by row share."""
    cm = np.asarray(cm, dtype=np.int64)
    if cm.size == 0 or cm.sum() == 0:
        return empty_figure("No predictions", height=height)
    totals = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, totals, out=np.zeros(cm.shape, dtype=float), where=totals > 0)
    text = [
        [f"{cm[i, j]:,}<br>{100 * share[i, j]:.0f}%" for j in range(len(classes))]
        for i in range(len(classes))
    ]
    trace = dict(
        type="heatmap",
        z=share.tolist(),
        x=list(classes),
        y=list(classes),
        text=text,
        texttemplate="%{text}",
        colorscale="Blues",
        zmin=0,
        zmax=1,
        showscale=False,
        hovertemplate="true %{y}<br>predicted %{x}<br>%{text}<extra></extra>",
    )
    return figure(
        [trace],
        title=title or None,
        height=height,
        x_title="predicted",
        y_title="true",
        yaxis=dict(autorange="reversed", gridcolor=GRID),
        xaxis=dict(side="bottom", gridcolor=GRID, tickangle=0),
    )


def _binary(pred: pd.DataFrame, class_name: str) -> tuple[np.ndarray, np.ndarray] | None:
    classes = prediction_classes(pred)
    if class_name not in classes:
        return None
    y = pred["target"].to_numpy() == classes.index(class_name)
    if y.all() or not y.any():
        return None  # one-vs-rest needs both positives and negatives
    return y, pred[f"{PROB_PREFIX}{class_name}"].to_numpy(dtype=np.float64)


def roc_points(pred: pd.DataFrame, class_name: str) -> tuple[np.ndarray, np.ndarray, float] | None:
    """``(fpr, tpr, auc)`` of ``class_name`` against the rest; None when the split lacks
    positives or negatives of it."""
    from sklearn.metrics import roc_auc_score, roc_curve

    yp = _binary(pred, class_name)
    if yp is None:
        return None
    fpr, tpr, _ = roc_curve(*yp)
    return fpr, tpr, float(roc_auc_score(*yp))


def pr_points(pred: pd.DataFrame, class_name: str) -> tuple[np.ndarray, np.ndarray, float, float] | None:
    """``(recall, precision, average precision, prevalence)`` of ``class_name`` against the rest."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    yp = _binary(pred, class_name)
    if yp is None:
        return None
    precision, recall, _ = precision_recall_curve(*yp)
    return recall, precision, float(average_precision_score(*yp)), float(yp[0].mean())


def roc_figure(
    preds: Sequence[tuple[CurveRun, pd.DataFrame]], class_name: str, height: int = 360
) -> go.Figure:
    """ROC curves of several runs for ``class_name`` (one-vs-rest), AUC in the legend."""
    traces: list[dict] = [
        dict(
            type="scatter",
            x=[0, 1],
            y=[0, 1],
            mode="lines",
            showlegend=False,
            line=dict(color="#999999", dash="dash", width=1),
            hoverinfo="skip",
        )
    ]
    for run, pred in preds:
        pts = roc_points(pred, class_name)
        if pts is None:
            continue
        fpr, tpr, auc = pts
        traces.append(
            dict(
                type="scatter",
                x=fpr.tolist(),
                y=tpr.tolist(),
                mode="lines",
                name=f"{run.label} (AUC {auc:.3f})",
                line=dict(color=run.color, width=2),
                hovertemplate=f"{run.label}<br>1 - specificity %{{x:.3f}}<br>sensitivity %{{y:.3f}}<extra></extra>",
            )
        )
    if len(traces) == 1:
        return empty_figure(f"No run has both {class_name} and other images in this split", height=height)
    return _figure(
        traces,
        title=f"ROC: {class_name} vs rest",
        height=height,
        x_title="false positive rate",
        y_title="true positive rate (sensitivity)",
        xaxis=dict(range=[0, 1], gridcolor=GRID),
        yaxis=dict(range=[0, 1.02], gridcolor=GRID),
        legend=dict(
            orientation="v",
            y=0.02,
            yanchor="bottom",
            x=0.98,
            xanchor="right",
            bgcolor="rgba(255,255,255,0.8)",
        ),
    )


def pr_figure(
    preds: Sequence[tuple[CurveRun, pd.DataFrame]], class_name: str, height: int = 360
) -> go.Figure:
    """Precision-recall curves of several runs for ``class_name`` (one-vs-rest), average
    precision in the legend, the prevalence (a random classifier's precision) dashed."""
    traces: list[dict] = []
    prevalence = None
    for run, pred in preds:
        pts = pr_points(pred, class_name)
        if pts is None:
            continue
        recall, precision, ap, prevalence = pts
        traces.append(
            dict(
                type="scatter",
                x=recall.tolist(),
                y=precision.tolist(),
                mode="lines",
                name=f"{run.label} (AP {ap:.3f})",
                line=dict(color=run.color, width=2, shape="hv"),
                hovertemplate=f"{run.label}<br>recall %{{x:.3f}}<br>precision %{{y:.3f}}<extra></extra>",
            )
        )
    if not traces:
        return empty_figure(f"No run has both {class_name} and other images in this split", height=height)
    traces.insert(
        0,
        dict(
            type="scatter",
            x=[0, 1],
            y=[prevalence, prevalence],
            mode="lines",
            showlegend=False,
            line=dict(color="#999999", dash="dash", width=1),
            hoverinfo="skip",
        ),
    )
    return _figure(
        traces,
        title=f"Precision-recall: {class_name} vs rest",
        height=height,
        x_title="recall (sensitivity)",
        y_title="precision",
        xaxis=dict(range=[0, 1], gridcolor=GRID),
        yaxis=dict(range=[0, 1.02], gridcolor=GRID),
        legend=dict(
            orientation="v", y=0.02, yanchor="bottom", x=0.02, xanchor="left", bgcolor="rgba(255,255,255,0.8)"
        ),
    )
