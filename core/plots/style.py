"""One look for every figure: the colour sequence, class colours, layout defaults.

Colours are the Okabe-Ito palette (readable with the common colour-vision deficiencies),
then Paul Tol's muted colours for datasets with many classes, assigned to classes in a stable order so a class keeps its colour across figures and pages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go

COLORS: tuple[str, ...] = (
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#009E73",  # green
    "#D55E00",  # vermillion
    "#56B4E9",  # sky blue
    "#CC79A7",  # purple
    "#F0E442",  # yellow
    # Paul Tol's muted scheme: datasets with a dozen findings still get distinct colours.
    "#332288",  # indigo
    "#117733",  # dark green
    "#882255",  # wine
    "#44AA99",  # teal
    "#999933",  # olive
    "#AA4499",  # magenta
    "#DDCC77",  # sand
    "#000000",  # black
    "#7F7F7F",  # grey
)
OTHER_COLOR = "#BBBBBB"
SPLIT_COLORS = {"train": "#0072B2", "val": "#E69F00", "test": "#009E73", "unsplit": "#7F7F7F", "": "#7F7F7F"}
SEQUENTIAL = "Blues"  # heatmaps: counts from white to dark blue
FONT = dict(family="Source Sans Pro, Helvetica, Arial, sans-serif", size=13)
HEIGHT = 360
GRID = "#E6E6E6"
MANY = 6  # more named traces than this: the legend is a column right of the plot


def color_map(names: Sequence[str]) -> dict[str, str]:
    """A colour per name in the given order; ``other``/``(missing)`` buckets are grey."""
    out: dict[str, str] = {}
    i = 0
    for name in names:
        if name in ("other", "(missing)"):
            out[name] = OTHER_COLOR
            continue
        out[name] = COLORS[i % len(COLORS)]
        i += 1
    return out


def base_layout(
    *,
    title: str | None = None,
    height: int = HEIGHT,
    x_title: str | None = None,
    y_title: str | None = None,
    legend_title: str | None = None,
    xaxis: dict[str, Any] | None = None,
    yaxis: dict[str, Any] | None = None,
    legend: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The shared layout: white background, light grid, small margins, a horizontal legend
    on top; ``xaxis``/``yaxis``/``extra`` add to it. (Set directly rather than through
    ``template="plotly_white"``: copying a template costs about 80 ms per figure.)"""
    # automargin: tick labels and axis titles get the room they need (an exported page has no
    # Streamlit theme to add it).
    axis = dict(gridcolor=GRID, linecolor=GRID, zerolinecolor=GRID, automargin=True)
    layout: dict[str, Any] = dict(
        paper_bgcolor="white",
        plot_bgcolor="white",
        colorway=list(COLORS),
        font=FONT,
        height=height,
        # A title sits at the top of the figure, the legend between it and the plot.
        margin=dict(l=10, r=10, t=60 if title else 10, b=10),
        legend={
            "orientation": "h",
            "yanchor": "bottom",
            "y": 1.02,
            "xanchor": "left",
            "x": 0,
            "title": dict(text=legend_title) if legend_title else None,
            **(legend or {}),
        },
        bargap=0.15,
        xaxis={**axis, **({"title": dict(text=x_title)} if x_title else {}), **(xaxis or {})},
        yaxis={**axis, **({"title": dict(text=y_title)} if y_title else {}), **(yaxis or {})},
    )
    if title:
        layout["title"] = dict(text=title, x=0, xanchor="left", y=1, yanchor="top", yref="container",
                               pad=dict(t=8, l=4), font=dict(size=15))  # fmt: skip
    layout.update(extra)
    return layout


def apply_layout(fig: go.Figure, **kwargs: Any) -> go.Figure:
    """Apply ``base_layout(**kwargs)`` in one update (each update validates the whole layout)."""
    fig.update_layout(base_layout(**kwargs))
    return fig


def figure(traces: list[dict[str, Any]], **layout: Any) -> go.Figure:
    """A figure from trace dicts and ``base_layout`` arguments, validated once. With many
    named traces the legend becomes a column right of the plot (tall enough for every
    entry), so a dozen classes do not bury the bars under a wrapped legend."""
    named = sum(1 for t in traces if t.get("name")) if layout.get("showlegend", True) else 0
    if named > MANY:
        layout["height"] = max(layout.get("height", HEIGHT), 22 * named + 60)
        right = {"orientation": "v", "x": 1.02, "xanchor": "left", "y": 1, "yanchor": "top"}
        layout["legend"] = {**right, **layout.get("legend", {})}
    return go.Figure(data=traces, layout=base_layout(**layout))


def empty_figure(message: str, height: int = 200) -> go.Figure:
    """A figure that says why there is nothing to plot (never fake data)."""
    note = dict(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    return figure([], height=height, annotations=[note], xaxis=dict(visible=False), yaxis=dict(visible=False))
