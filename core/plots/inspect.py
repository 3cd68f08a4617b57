"""Figures of the Inspect page (pure functions)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from core.plots.style import COLORS, figure


def probability_figure(
    runs: Sequence[str], classes: Sequence[Sequence[str]], probs: Sequence[np.ndarray]
) -> go.Figure:
    """Grouped bars: each run's probability per class."""
    traces = [
        {
            "type": "bar",
            "name": name,
            "x": list(cls),
            "y": [float(v) for v in p],
            "text": [f"{float(v):.2f}" for v in p],
            "textposition": "outside",
            "marker": {"color": COLORS[i % len(COLORS)]},
        }
        for i, (name, cls, p) in enumerate(zip(runs, classes, probs, strict=True))
    ]
    return figure(
        traces,
        barmode="group",
        height=260,
        yaxis={"range": [0, 1.15], "title": "probability"},
        margin={"t": 20, "b": 30},
    )
