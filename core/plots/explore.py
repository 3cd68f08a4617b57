"""Figures of the Explore page, built from the tables of ``core.explore`` (no computing
beyond laying the numbers out). Traces are plain dicts of lists and the layout is set once:
plotly validates every property it is given, and per-call updates multiply that cost."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from core.plots.style import MANY, SEQUENTIAL, color_map, empty_figure, figure


def _colours(names: Sequence[str], colors: dict[str, str] | None) -> dict[str, str]:
    own = color_map(list(names))
    return {n: (colors or {}).get(n, own[n]) for n in names}


def _count_axis(top: float, percent: bool = False) -> dict:
    # Counts of a handful of images: whole numbers on the axis, not 0.2, 0.4, ...
    return {"dtick": 1} if not percent and top <= 5 else {}


def class_balance_figure(
    long: pd.DataFrame, percent: bool = False, colors: dict[str, str] | None = None
) -> go.Figure:
    """Bars per split, one colour per class; ``long`` is ``core.explore.class_counts``.
    ``colors`` keeps a class's colour the same across figures (default: by order here)."""
    if long.empty:
        return empty_figure("No images")
    classes = list(dict.fromkeys(long["class"]))
    colours = _colours(classes, colors)
    value = "percent" if percent else "count"
    traces = []
    for cls in classes:
        part = long[long["class"] == cls]
        counts, shares = part["count"].tolist(), part["percent"].tolist()
        traces.append(dict(
            type="bar", name=cls, x=part["split"].tolist(), y=part[value].tolist(), marker=dict(color=colours[cls]),
            text=[f"{v:.1f}%" if percent else f"{int(v):,}" for v in part[value]] if len(classes) <= MANY else None,
            textposition="outside",
            cliponaxis=False, customdata=[[c, p] for c, p in zip(counts, shares, strict=True)],
            hovertemplate=f"{cls}<br>%{{x}}: %{{customdata[0]:,}} images (%{{customdata[1]:.1f}}%)<extra></extra>",
        ))  # fmt: skip
    return figure(traces, barmode="group", y_title="% of the split" if percent else "images", x_title="split",
                  yaxis=_count_axis(long[value].max(), percent))  # fmt: skip


def distribution_figure(
    dist, percent: bool = False, height: int = 320, colors: dict[str, str] | None = None
) -> go.Figure:
    """A histogram (numeric bins) or bars (values, top N + other), one colour per group.
    ``dist`` is a ``core.explore.Distribution``."""
    table = dist.table
    if table.empty or table["count"].sum() == 0:
        return empty_figure(f"{dist.column}: no values", height=height)
    colours = _colours(dist.groups, colors)
    y = table["count"].astype(float)
    if percent:
        totals = table.groupby("group")["count"].transform("sum").replace(0, 1)
        y = 100.0 * table["count"] / totals
    table = table.assign(y=y)
    histogram = dist.kind == "histogram"
    traces = []
    for group in dist.groups:
        part = table[table["group"] == group]
        trace = dict(
            type="bar", name=group, y=part["y"].tolist(), marker=dict(color=colours[group]),
            customdata=[[v, c] for v, c in zip(part["value"].tolist(), part["count"].tolist(), strict=True)],
            hovertemplate=f"{group}<br>%{{customdata[0]}}: %{{customdata[1]:,}}<extra></extra>",
        )  # fmt: skip
        if histogram:
            trace.update(x=part["x"].tolist(), width=part["width"].tolist())
        else:
            trace.update(x=part["value"].tolist())
        traces.append(trace)
    xaxis = {} if histogram else dict(type="category", categoryorder="array", categoryarray=dist.values)
    top = table.groupby("x")["y"].sum().max() if histogram else table["y"].max()
    return figure(traces, title=dist.column, height=height, y_title="% of the group" if percent else "images",
                  barmode="stack" if histogram else "group", bargap=0.02 if histogram else 0.15, xaxis=xaxis,
                  yaxis=_count_axis(top, percent), legend=dict(traceorder="normal"))  # fmt: skip


def crosstab_figure(table: pd.DataFrame, height: int = 420) -> go.Figure:
    """A heatmap of counts with the numbers written in the cells."""
    if table.empty:
        return empty_figure("Nothing to cross")
    z = table.to_numpy().tolist()
    trace = dict(
        type="heatmap", z=z, x=[str(c) for c in table.columns], y=[str(r) for r in table.index],
        colorscale=SEQUENTIAL, text=z, texttemplate="%{text:,}", colorbar=dict(title=dict(text="images")),
        hovertemplate="%{y} / %{x}: %{z:,}<extra></extra>",
    )  # fmt: skip
    return figure([trace], height=height, x_title=str(table.columns.name), y_title=str(table.index.name),
                  xaxis=dict(type="category"), yaxis=dict(type="category", autorange="reversed"))  # fmt: skip


def missing_figure(missing: pd.DataFrame, height: int | None = None) -> go.Figure:
    """Horizontal bars: percent of images missing each column (``core.explore.missing_values``)."""
    shown = missing[missing["missing"] > 0]
    if shown.empty:
        return empty_figure("No missing values in any column", height=160)
    trace = dict(
        type="bar", x=shown["percent"].tolist(), y=shown["column"].tolist(), orientation="h",
        marker=dict(color="#D55E00"), textposition="auto",
        text=[f"{p:.1f}% ({n:,})" for p, n in zip(shown["percent"], shown["missing"], strict=True)],
        hovertemplate="%{y}: %{x:.1f}% missing<extra></extra>",
    )  # fmt: skip
    return figure([trace], height=height or max(200, 22 * len(shown) + 60), x_title="% of images missing",
                  xaxis=dict(range=[0, 100]), yaxis=dict(type="category", autorange="reversed"))  # fmt: skip


def box_centres_figure(centres: np.ndarray, height: int = 380) -> go.Figure:
    """Where box centres fall, in normalised image coordinates (0,0 = top left)."""
    bins = centres.shape[0]
    axis = ((np.arange(bins) + 0.5) / bins).tolist()
    trace = dict(
        type="heatmap", z=centres.tolist(), x=axis, y=axis, colorscale=SEQUENTIAL,
        colorbar=dict(title=dict(text="boxes")), hovertemplate="x %{x:.2f}, y %{y:.2f}: %{z:,} boxes<extra></extra>",
    )  # fmt: skip
    return figure([trace], title="Box centres", height=height, x_title="x / image width", y_title="y / image height",
                  xaxis=dict(range=[0, 1], constrain="domain"),
                  yaxis=dict(range=[1, 0], scaleanchor="x", constrain="domain"))  # fmt: skip


def box_sizes_figure(
    table: pd.DataFrame, classes: Sequence[str], height: int = 380, colors: dict[str, str] | None = None
) -> go.Figure:
    """Box area as a percent of the image, one histogram per class (``core.explore.box_size_table``)."""
    if table.empty:
        return empty_figure("No boxes with a known image size")
    colours = _colours(classes, colors)
    traces = []
    for cls in classes:
        part = table[table["group"] == cls]
        traces.append(dict(
            type="bar", name=cls, x=part["x"].tolist(), y=part["count"].tolist(), width=part["width"].tolist(),
            marker=dict(color=colours[cls]), opacity=0.75,
            hovertemplate=f"{cls}<br>%{{x:.1f}}% of the image: %{{y:,}}<extra></extra>",
        ))  # fmt: skip
    return figure(traces, title="Box sizes", height=height, x_title="box area, % of the image", y_title="boxes",
                  barmode="overlay", bargap=0.02)  # fmt: skip


def intensity_figure(
    classes: Sequence[str],
    histogram: Sequence[Sequence[float]],
    height: int = 320,
    colors: dict[str, str] | None = None,
) -> go.Figure:
    """Share of pixels per intensity bin, one line per class."""
    if not classes:
        return empty_figure("No images read")
    colours = _colours(classes, colors)
    n = len(histogram[0])
    x = ((np.arange(n) + 0.5) / n).tolist()
    traces = [
        dict(type="scatter", mode="lines", x=x, y=(100.0 * np.asarray(shares)).tolist(), name=cls,
             line=dict(color=colours[cls], width=2),
             hovertemplate=f"{cls}<br>intensity %{{x:.2f}}: %{{y:.1f}}% of pixels<extra></extra>")
        for cls, shares in zip(classes, histogram, strict=True)
    ]  # fmt: skip
    return figure(traces, title="Pixel intensities", height=height, x_title="intensity (0 = black, 1 = white)",
                  y_title="% of pixels")  # fmt: skip


def image_means_figure(
    image_means: dict[str, list[float]],
    classes: Sequence[str],
    height: int = 320,
    colors: dict[str, str] | None = None,
) -> go.Figure:
    """Each image's mean intensity per class: a class that is brighter on average is a shortcut
    a model can learn instead of the disease."""
    colours = _colours(classes, colors)
    traces = [
        dict(type="box", y=image_means.get(cls, []), name=cls, marker=dict(color=colours[cls]), boxpoints="outliers",
             hovertemplate=f"{cls}: %{{y:.3f}}<extra></extra>")
        for cls in classes
    ]  # fmt: skip
    return figure(
        traces, title="Mean intensity per image", height=height, y_title="image mean (0..1)", showlegend=False
    )
