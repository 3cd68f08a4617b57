"""Figures of a run's evaluation: ROC and PR curves, confusion matrices, reliability
diagrams, training curves, and curves of runs repeated over seeds (a mean with a band).

Pure functions of the evaluation tables (``core.evaluate``), shared by the Compare page and
the HTML report (``core.evaluate.report``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd


def _figure(traces: list[dict[str, Any]], **layout: Any) -> Any:
    from core.plots.style import figure

    return figure(traces, **layout)


def _colors(names: Sequence[str]) -> dict[str, str]:
    from core.plots.style import color_map

    return color_map(list(names))


def roc_figure(df: pd.DataFrame, classes: Sequence[str], op: dict[str, Any] | None = None) -> Any:
    """One-vs-rest ROC curve per class (AUC in the legend); the operating point as a marker."""
    from core.plots.runs import roc_points

    colors, traces = _colors(classes), []
    for name in classes:
        points = roc_points(df, name)
        if points is None:
            continue
        fpr, tpr, auc = points
        traces.append(
            dict(
                type="scatter",
                mode="lines",
                x=fpr.tolist(),
                y=tpr.tolist(),
                name=f"{name} (AUC {auc:.3f})",
                line=dict(color=colors[name], width=2),
            )
        )
    traces.append(
        dict(
            type="scatter",
            mode="lines",
            x=[0, 1],
            y=[0, 1],
            name="chance",
            showlegend=False,
            line=dict(color="#BBBBBB", dash="dot"),
        )
    )
    if op and op.get("threshold") is not None and op.get("specificity") is not None:
        traces.append(
            dict(
                type="scatter",
                mode="markers",
                x=[1 - op["specificity"]],
                y=[op["sensitivity"]],
                name=f"operating point ({op['positive_class']})",
                marker=dict(size=12, symbol="x", color="#000000"),
            )
        )
    return _figure(
        traces,
        x_title="1 - specificity (false positive rate)",
        y_title="sensitivity",
        xaxis=dict(range=[0, 1]),
        yaxis=dict(range=[0, 1.02]),
        height=380,
    )


def pr_figure(df: pd.DataFrame, classes: Sequence[str]) -> Any:
    """One-vs-rest precision-recall curve per class (average precision in the legend)."""
    from core.plots.runs import pr_points

    colors, traces = _colors(classes), []
    for name in classes:
        points = pr_points(df, name)
        if points is None:
            continue
        rec, prec, ap, _ = points
        traces.append(
            dict(
                type="scatter",
                mode="lines",
                x=rec.tolist(),
                y=prec.tolist(),
                name=f"{name} (AP {ap:.3f})",
                line=dict(color=colors[name], width=2, shape="hv"),
            )
        )
    return _figure(
        traces,
        x_title="recall (sensitivity)",
        y_title="precision (PPV)",
        xaxis=dict(range=[0, 1]),
        yaxis=dict(range=[0, 1.02]),
        height=380,
    )


def confusion_figure(
    matrix: Sequence[Sequence[int]], classes: Sequence[str], title: str | None = None
) -> Any:
    """Counts with each row's share (rows = true class): the Compare page's heatmap, sized
    for the report."""
    from core.plots.runs import confusion_figure as heatmap

    return heatmap(np.asarray(matrix), list(classes), title or "", height=120 + 50 * len(classes))


def reliability_figure(table: pd.DataFrame) -> Any:
    """Reliability diagram from ``calibration.reliability``: observed share against mean
    predicted probability per bin (marker size ~ images in the bin)."""
    curves = list(dict.fromkeys(table["curve"]))
    colors = _colors([c for c in curves if c != "top label"])
    traces = [
        dict(
            type="scatter",
            mode="lines",
            x=[0, 1],
            y=[0, 1],
            name="perfect",
            showlegend=False,
            line=dict(color="#BBBBBB", dash="dot"),
        )
    ]
    for curve in curves:
        part = table[(table["curve"] == curve) & (table["count"] > 0)]
        size = (6 + 14 * np.sqrt(part["count"] / max(part["count"].max(), 1))).tolist()
        traces.append(
            dict(
                type="scatter",
                mode="lines+markers",
                name=curve,
                x=part["confidence"].tolist(),
                y=part["accuracy"].tolist(),
                marker=dict(size=size, color=colors.get(curve, "#000000")),
                line=dict(color=colors.get(curve, "#000000"), width=3 if curve == "top label" else 1.5),
                customdata=part["count"].tolist(),
                hovertemplate="%{x:.2f} predicted, %{y:.2f} observed (%{customdata} images)",
            )
        )
    return _figure(
        traces,
        x_title="mean predicted probability",
        y_title="observed share",
        xaxis=dict(range=[0, 1]),
        yaxis=dict(range=[0, 1.02]),
        height=380,
    )


def training_curves_figure(metrics: pd.DataFrame, names: Sequence[str] = ("loss", "auc")) -> Any:
    """Train and val curves per epoch of one run (``RunStore.metrics`` rows)."""
    from core.plots.style import SPLIT_COLORS

    traces = []
    for i, name in enumerate(names):
        for split in ("train", "val"):
            part = metrics[(metrics["name"] == name) & (metrics["split"] == split)]
            part = part.groupby("epoch")["value"].last().reset_index()
            if part.empty:
                continue
            traces.append(
                dict(
                    type="scatter",
                    mode="lines+markers",
                    x=part["epoch"].tolist(),
                    y=part["value"].tolist(),
                    name=f"{split} {name}",
                    yaxis="y" if i == 0 else "y2",
                    line=dict(color=SPLIT_COLORS[split], dash="solid" if i == 0 else "dash"),
                )
            )
    right = dict(
        title=dict(text=names[1] if len(names) > 1 else ""),
        overlaying="y",
        side="right",
        showgrid=False,
        automargin=True,
    )
    return _figure(
        traces,
        x_title="epoch",
        y_title=names[0],
        yaxis2=right,
        height=340,
        xaxis=dict(dtick=1) if metrics["epoch"].nunique() <= 12 else None,
    )


def seed_band_figure(curves: pd.DataFrame, metric: str = "auc", title: str | None = None) -> Any:
    """Mean curve with its band per seed group (``compare.seed_curves``)."""
    from core.plots.style import empty_figure

    if curves.empty:
        return empty_figure(f"no {metric} curves yet")
    labels = list(dict.fromkeys(curves["label"]))
    colors, traces = _colors(labels), []
    for label in labels:
        part = curves[curves["label"] == label]
        c = colors[label]
        x = part["epoch"].tolist()
        traces.append(
            dict(
                type="scatter",
                mode="lines",
                x=x + x[::-1],
                y=part["hi"].tolist() + part["lo"].tolist()[::-1],
                fill="toself",
                fillcolor=_rgba(c, 0.18),
                line=dict(width=0),
                hoverinfo="skip",
                showlegend=False,
                name=label,
            )
        )
        traces.append(
            dict(
                type="scatter",
                mode="lines+markers",
                x=x,
                y=part["mean"].tolist(),
                name=label,
                line=dict(color=c, width=2),
                customdata=part["n"].tolist(),
                hovertemplate="epoch %{x}: %{y:.3f} (mean of %{customdata} runs)<extra></extra>",
            )
        )
    few = curves["epoch"].nunique() <= 12  # whole epochs on the axis, not 1.5
    return _figure(traces, title=title, x_title="epoch", y_title=metric, xaxis=dict(dtick=1) if few else None)


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"
