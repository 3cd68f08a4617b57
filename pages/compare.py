"""Compare: runs side by side while they train.

Thin: records and metric rows come from the store, tables from ``core.runs.views``, figures
from ``core.plots.runs``. The curves are a fragment that refreshes every 2 s while a
selected run is queued or running; it reads only the rows written since its last read
(``after_id``) and keeps each run's rows in the session, so a tick costs one small query per
live run and never reruns the page.
"""

from __future__ import annotations

import os
from typing import Any

import pandas as pd
import streamlit as st

from core.plots import runs as figs
from core.runs import run_dir, views
from core.runs.store import RunRecord, RunStatus, RunStore
from pages import run_widgets as rw
from pages.common import guard

RUNS_KEY = "cmp_runs"
CACHE_KEY = "cmp_metric_rows"  # {run_id: {"df", "last", "final"}}
DEFAULT_SELECTED = 5
X_LABELS = {"epoch": "epoch", "step": "step", "time": "wall time"}


# ---------------------------------------------------------------- picking runs


def _pick_runs(runs: list[RunRecord]) -> list[RunRecord]:
    c = st.columns(4)
    statuses = c[0].multiselect("Status", [s.value for s in RunStatus], key="cmp_f_status", placeholder="any")
    tags = c[1].multiselect(
        "Tags", sorted({t for r in runs for t in r.tags}), key="cmp_f_tags", placeholder="any"
    )
    archs = c[2].multiselect(
        "Architecture",
        sorted({str(r.config.get("arch", "")) for r in runs}),
        key="cmp_f_arch",
        placeholder="any",
    )
    strategies = c[3].multiselect(
        "Strategy",
        sorted({views.strategy_label(r.config) for r in runs}),
        key="cmp_f_strategy",
        placeholder="any",
    )
    shown = views.filter_runs(runs, statuses, tags, archs, strategies)
    if not shown:
        st.info("No run matches these filters.", icon=":material/filter_alt_off:")
        return []
    table = views.compare_table(shown, rw.best_so_far(shown))
    ids = rw.select_runs(
        table,
        RUNS_KEY,
        mode="multi-row",
        default_ids=[r.id for r in shown[:DEFAULT_SELECTED]],
        column_order=["run", "status", "arch", "strategy", "best", "monitor", "tags", "created"],
        column_config={
            "status": st.column_config.TextColumn("status", help=rw.STATUS_HELP, width="small"),
            "best": st.column_config.NumberColumn(
                "best val", format="%.4f", help="Best value of the run's monitor"
            ),
            "created": rw.created_column(),
        },
        height=min(38 + 35 * len(table), 300),
    )
    by_id = {r.id: r for r in shown}
    return [by_id[i] for i in ids]


# ---------------------------------------------------------------- metric rows, read incrementally


def _metric_rows(store: RunStore, picked: list[RunRecord]) -> dict[str, pd.DataFrame]:
    """Each selected run's metric rows: read once when finished, else only the rows written
    since the last read. The record is read before its rows, so a run seen finished has all
    its rows in that read."""
    cache: dict[str, dict[str, Any]] = st.session_state.setdefault(CACHE_KEY, {})
    for rec in picked:
        entry = cache.get(rec.id)
        if entry is not None and entry["final"]:
            continue
        after = entry["last"] if entry else 0
        new, last = store.metrics(rec.id, after_id=after)
        if entry is not None and not new.empty:
            new = pd.concat([entry["df"], new], ignore_index=True)
        elif entry is not None:
            new = entry["df"]
        cache[rec.id] = {"df": new, "last": last, "final": rec.status.finished}
    wanted = {r.id for r in picked}
    for run_id in [k for k in cache if k not in wanted]:
        del cache[run_id]  # only the selection stays in memory
    return {r.id: cache[r.id]["df"] for r in picked}


# ---------------------------------------------------------------- curves (live)


def _curve_runs(picked: list[RunRecord], rows: dict[str, pd.DataFrame]) -> list[figs.CurveRun]:
    colors = figs.run_colors([r.id for r in picked])
    starts = views.run_starts(picked, rows)
    names = [r.name for r in picked]
    return [
        figs.CurveRun(
            r.id,
            r.name if names.count(r.name) == 1 else f"{r.name} ({r.id})",
            colors[r.id],
            views.best_epoch(r, rows.get(r.id)),
            starts.get(r.id),
        )
        for r in picked
    ]


def _controls(names: list[str]) -> tuple[list[str], list[str], str, float, bool]:
    default = [m for m in ("auc", "loss") if m in names] or names[:1]
    top = st.columns([3, 1], vertical_alignment="bottom")
    metrics = top[0].multiselect(
        "Metrics",
        names,
        default=default,
        key="cmp_metric_names",
        help="One chart per metric; per-class metrics are named metric/class.",
    )
    splits = top[1].pills(
        "Splits",
        ["train", "val", "test"],
        selection_mode="multi",
        default=["train", "val"],
        key="cmp_splits",
        help="val solid, train dotted, test (best checkpoint) as a cross",
    )
    row = st.columns([2, 2, 1], vertical_alignment="bottom")
    x = row[0].segmented_control(
        "x axis",
        list(X_LABELS),
        default="epoch",
        format_func=X_LABELS.get,
        key="cmp_x",
        help="wall time: minutes since the run started",
    )
    smoothing = row[1].slider(
        "Smoothing",
        0.0,
        0.99,
        0.0,
        0.01,
        key="cmp_smoothing",
        help="TensorBoard's smoothing: a debiased exponential moving average; "
        "the raw curve stays faint behind it.",
    )
    log_y = row[2].toggle("Log scale", key="cmp_log_y")
    return metrics, list(splits or ["val"]), x or "epoch", smoothing, log_y


def _live_section(run_ids: list[str], live_at_start: bool) -> None:
    with guard("the curves"):
        store = rw.run_store()
        records = {r.id: r for r in store.list_runs()}
        picked = [records[i] for i in run_ids if i in records]
        if rw.is_live(picked) != live_at_start or len(picked) != len(run_ids):
            st.rerun()  # a run finished, resumed or was deleted: re-arm the refresh, show its predictions
        rows = _metric_rows(store, picked)
        names = views.metric_names(rows.values())
        if not names:
            st.info(
                "No metrics yet: a run reports its first ones after its first epoch "
                "(a queued run waits for a free device).",
                icon=":material/hourglass_top:",
            )
            return
        metrics, splits, x, smoothing, log_y = _controls(names)
        runs = _curve_runs(picked, rows)
        long = pd.concat([df for df in rows.values() if not df.empty], ignore_index=True)
        cols = st.columns(2)
        for i, metric in enumerate(metrics):
            fig = figs.curves_figure(long, metric, runs, splits=splits, x=x, smoothing=smoothing, log_y=log_y)
            cols[i % 2].plotly_chart(fig, key=f"cmp_curve_{metric}")
        if live_at_start:
            st.caption(":material/autorenew: Refreshing every 2 s while a selected run is queued or running.")
        _runs_table(picked, rows)


def _runs_table(picked: list[RunRecord], rows: dict[str, pd.DataFrame]) -> None:
    st.markdown("##### The selected runs")
    table = views.selected_runs_table(picked, rows)
    number = {
        c: st.column_config.NumberColumn(c, format="%.4f")
        for c in table.columns
        if c.startswith(("val ", "test "))
    }
    number["best epoch"] = st.column_config.NumberColumn("best epoch", format="%d")
    st.dataframe(table, column_config=number, placeholder="–")
    what = "the config fields that differ between them" if len(picked) > 1 else "the main config fields"
    st.caption(
        f"Rows show {what}, then the metrics at each run's best epoch (not its last); "
        "test metrics are of the best checkpoint."
    )
    names = {r.id: r.name for r in picked}
    st.download_button(
        "Download metrics (CSV)",
        data=lambda: views.metrics_csv(rows, names),
        file_name="chestlab-metrics.csv",
        mime="text/csv",
        on_click="ignore",
        icon=":material/download:",
        key="cmp_csv",
    )


# ---------------------------------------------------------------- predictions of the best checkpoint


@st.cache_data(max_entries=128, show_spinner=False)
def _predictions(path: str, mtime_ns: int) -> pd.DataFrame:
    return pd.read_csv(path)


def _load_predictions(picked: list[RunRecord], split: str) -> dict[str, pd.DataFrame]:
    out = {}
    for rec in picked:
        path = run_dir(rec.id) / f"predictions_{split}.csv"
        try:
            out[rec.id] = _predictions(str(path), os.stat(path).st_mtime_ns)
        except FileNotFoundError:
            continue
    return out


def _evaluation_section(picked: list[RunRecord]) -> None:
    st.subheader("Predictions of the best checkpoints")
    c = st.columns([1, 2, 3], vertical_alignment="bottom")
    split = c[0].segmented_control("Split", ["val", "test"], default="val", key="cmp_eval_split") or "val"
    preds = _load_predictions(picked, split)
    missing = [r.name for r in picked if r.id not in preds]
    if not preds:
        st.info(
            f"No {split} predictions yet: a run writes them when it finishes.",
            icon=":material/hourglass_top:",
        )
        return
    classes = list(dict.fromkeys(cls for df in preds.values() for cls in figs.prediction_classes(df)))
    cls = c[1].selectbox(
        "Class (one-vs-rest)", classes, index=1 if len(classes) > 1 else 0, key="cmp_eval_class"
    )
    if missing:
        c[2].caption(f"No {split} predictions for {', '.join(missing)} (written when a run finishes).")
    runs = {r.id: r for r in _curve_runs(picked, {})}  # colours as on the curves
    roc, pr = st.columns(2)
    pairs = [(runs[i], df) for i, df in preds.items()]
    roc.plotly_chart(figs.roc_figure(pairs, cls), key="cmp_roc")
    pr.plotly_chart(figs.pr_figure(pairs, cls), key="cmp_pr")
    st.markdown(f"##### Confusion matrices ({split})")
    items = list(preds.items())
    per_row = min(max(len(items), 2), 4)
    for start in range(0, len(items), per_row):
        cols = st.columns(per_row)
        for col, (run_id, df) in zip(cols, items[start : start + per_row], strict=False):
            names = figs.prediction_classes(df)
            cm = figs.confusion_counts(df, len(names))
            col.plotly_chart(
                figs.confusion_figure(cm, names, runs[run_id].label, height=300), key=f"cmp_cm_{run_id}"
            )
    st.caption(
        "Rows are the true class; each cell shows the count and the share of its row (the diagonal is each "
        "class's sensitivity)."
    )


# ---------------------------------------------------------------- the page


def main() -> None:
    st.title("Compare")
    runs: list[RunRecord] | None = None
    with guard("reading the runs"):
        runs = rw.run_store().list_runs()
    if runs is None:
        return
    if not runs:
        st.info(
            "No runs yet. Launch one on the Train page: its curves appear here while it trains.",
            icon=":material/info:",
        )
        rw.page_link("pages/train.py", "Train a model", ":material/model_training:")
        return
    st.caption(
        "Select runs in the table (tick the boxes on the left); their curves refresh while they train."
    )
    picked: list[RunRecord] = []
    with guard("the runs table"):
        picked = _pick_runs(runs)
    if not picked:
        st.info("Select one or more runs in the table to see their curves.", icon=":material/checklist:")
        return
    live = rw.is_live(picked)
    st.fragment(run_every=rw.refresh_every(live))(_live_section)([r.id for r in picked], live)
    with guard("the predictions"):
        _evaluation_section(picked)


main()
