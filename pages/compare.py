"""Compare: runs side by side while they train.

Thin: records and metric rows come from the store, tables from ``core.runs.views``, figures
from ``core.plots.runs``. The curves are a fragment that refreshes every 2 s while a
selected run is queued or running; it reads only the rows written since its last read
(``after_id``) and keeps each run's rows in the session, so a tick costs one small query per
live run and never reruns the page.

Below the curves, what makes the numbers trustworthy (``core.evaluate``): bootstrap
intervals, the paired A-vs-B test, runs repeated over seeds as a mean with a band, and one
run's operating point, calibration, subgroups and HTML report. Everything is computed from
the predictions a finished run wrote (``predictions_<split>.csv``) and cached by run id and
that file's modification time, so it is computed once, not on every rerun.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from typing import Any

import pandas as pd
import streamlit as st

from core.plots import evaluate as eval_figs
from core.plots import runs as figs
from core.runs import run_dir, views
from core.runs.store import RunRecord, RunStatus, RunStore
from core.workspace import workspace_root
from pages import run_widgets as rw
from pages.common import guard, progress_bar

RUNS_KEY = "cmp_runs"
CACHE_KEY = "cmp_metric_rows"  # {run_id: {"df", "last", "final"}}
DEFAULT_SELECTED = 5
X_LABELS = {"epoch": "epoch", "step": "step", "time": "wall time"}
N_RESAMPLES = 1000
CI_COLUMN = "val auc (95% CI)"
SEED_MODES = {"runs": "each run", "minmax": "mean, min-max band", "sd": "mean ± 1 sd"}
RULES = {"sensitivity": "a target sensitivity", "specificity": "a target specificity", "youden": "Youden's J"}
EVAL_TABS = {
    "op": ":material/tune: Operating point",
    "cal": ":material/balance: Calibration",
    "sub": ":material/groups: Subgroups",
    "report": ":material/description: Report",
}
AB_METRICS = ("auc", "pr_auc", "sensitivity", "specificity", "balanced_accuracy", "accuracy", "f1")
METHOD_NOTE = (
    "95% percentile intervals from 1,000 bootstrap resamples of the images (whole patients when the "
    "dataset names them), stratified by class."
)


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
    labels = _labels(picked)
    return [
        figs.CurveRun(
            r.id,
            labels[r.id],
            colors[r.id],
            views.best_epoch(r, rows.get(r.id)),
            starts.get(r.id),
        )
        for r in picked
    ]


def _controls(names: list[str], repeated: bool) -> tuple[list[str], list[str], str, float, bool, str]:
    default = [m for m in ("auc", "loss") if m in names] or names[:1]
    # Opened before the first epoch, only batch_loss exists: follow the default to val AUC and
    # loss once they appear, unless the user has chosen metrics themselves.
    # The value lives in session state only (a default= as well makes Streamlit warn).
    state = st.session_state
    if "cmp_metric_names" not in state or state["cmp_metric_names"] == state.get("_cmp_metric_default"):
        state["cmp_metric_names"] = default
    state["cmp_metric_names"] = [m for m in state["cmp_metric_names"] if m in names]
    state["_cmp_metric_default"] = default
    top = st.columns([3, 1], vertical_alignment="bottom")
    metrics = top[0].multiselect(
        "Metrics",
        names,
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
    mode = "runs"
    if repeated:
        mode = st.segmented_control(
            "Runs that differ only by seed",
            list(SEED_MODES),
            default="runs",
            required=True,
            format_func=SEED_MODES.get,
            key="cmp_seed_mode",
            help="Runs whose configs differ only in seed (and name, tags, device) are one experiment "
            "repeated: show each run, or their mean per epoch with the band it varies in.",
        )
    return metrics, list(splits or ["val"]), x or "epoch", smoothing, log_y, mode or "runs"


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
        from core.evaluate.compare import group_by_seed

        groups = views.distinct_seed_groups(group_by_seed(picked))
        repeated = any(len(g.run_ids) > 1 for g in groups)
        metrics, splits, x, smoothing, log_y, mode = _controls(names, repeated)
        runs = _curve_runs(picked, rows)
        long = pd.concat([df for df in rows.values() if not df.empty], ignore_index=True)
        cols = st.columns(2)
        for i, metric in enumerate(metrics):
            if mode == "runs":
                fig = figs.curves_figure(
                    long, metric, runs, splits=splits, x=x, smoothing=smoothing, log_y=log_y
                )
            else:
                fig = _seed_figure(long, groups, metric, splits, mode)
            cols[i % 2].plotly_chart(fig, key=f"cmp_curve_{metric}")
        if mode != "runs":
            st.caption(
                "Seed groups: each line is the mean over the group's runs per epoch (val, or the split "
                f"chosen), the band its {'min to max' if mode == 'minmax' else 'mean ± 1 sd'}; a run without "
                "repeats is a plain line. The x axis is the epoch; smoothing and the log scale apply to each run."
            )
        if live_at_start:
            st.caption(":material/autorenew: Refreshing every 2 s while a selected run is queued or running.")
        _runs_table(picked, rows)
        if repeated:
            _seed_table(picked, groups)


def _seed_figure(long: pd.DataFrame, groups: list, metric: str, splits: list[str], band: str) -> Any:
    from core.evaluate.compare import seed_curves

    split = "val" if "val" in splits else splits[0]
    curves = seed_curves(long, groups, metric, split, band)
    return eval_figs.seed_band_figure(curves, metric, title=f"{split} {metric}")


def _seed_table(picked: list[RunRecord], groups: list) -> None:
    table = views.seed_table(picked, groups)
    if table.empty:
        return
    st.markdown("##### Runs repeated over seeds")
    st.dataframe(table, placeholder="–")
    st.caption(
        "Best val metrics as mean ± sd over the runs of each experiment (runs whose configs differ only "
        "by seed); a difference smaller than these sds is not a difference."
    )


def _runs_table(picked: list[RunRecord], rows: dict[str, pd.DataFrame]) -> None:
    st.markdown("##### The selected runs")
    table = views.selected_runs_table(picked, rows)
    intervals = _intervals_of(picked, "val")
    texts = {run_id: r.text("auc") for run_id, r in intervals.items()}
    table = views.with_interval_column(table, picked, texts, CI_COLUMN)
    number = {
        c: st.column_config.NumberColumn(c, format="%.4f")
        for c in table.columns
        if c.startswith(("val ", "test "))
    }
    number["best epoch"] = st.column_config.NumberColumn("best epoch", format="%d")
    number[CI_COLUMN] = st.column_config.TextColumn(
        CI_COLUMN, help="The best checkpoint's val AUC and its 95% bootstrap interval (finished runs)"
    )
    st.dataframe(table, column_config=number, placeholder="–")
    what = "the config fields that differ between them" if len(picked) > 1 else "the main config fields"
    st.caption(
        f"Rows show {what}, then the metrics at each run's best epoch (not its last); "
        "test metrics are of the best checkpoint."
        + (f" {CI_COLUMN}: the best checkpoint's val AUC and its 95% bootstrap interval." if texts else "")
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


def _workspace() -> str:
    return str(workspace_root())


def _evaluated(picked: list[RunRecord]) -> list[RunRecord]:
    """The runs with val predictions that are not training: a run training again (resumed)
    has a newer checkpoint than its predictions, which the evaluation would recompute here."""
    return [r for r in picked if r.status not in views.LIVE and _mtime(r.id, "val") is not None]


def _mtime(run_id: str, split: str) -> int | None:
    """The modification time of the run's predictions on a split (None: not written yet)."""
    try:
        return os.stat(run_dir(run_id) / f"predictions_{split}.csv").st_mtime_ns
    except OSError:
        return None


def _labels(picked: list[RunRecord]) -> dict[str, str]:
    """A short name per run that tells it apart: its name; with its seed when runs share the
    name (repeats of one experiment) and the seed is its own; else with its id."""
    out = {}
    for r in picked:
        same = [q for q in picked if q.name == r.name]
        seed = r.config.get("seed")
        if r.name and len(same) == 1:
            out[r.id] = r.name
        elif r.name and sum(q.config.get("seed") == seed for q in same) == 1:
            out[r.id] = f"{r.name} · seed {seed}"
        else:
            out[r.id] = f"{r.name} ({r.id})" if r.name else r.id
    return out


def _default_pair(done: list[RunRecord]) -> tuple[int, int]:
    """Positions of the default A and B: the newest two runs of one dataset and task (B the
    newer), else the newest two."""

    def task(r: RunRecord) -> tuple:
        return (
            r.config.get("data"),
            r.config.get("format"),
            json.dumps(r.config.get("task") or {}, sort_keys=True),
        )

    for b, rb in enumerate(done):
        for a in range(b + 1, len(done)):
            if task(done[a]) == task(rb):
                return a, b
    return 1, 0


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


@st.cache_data(max_entries=256, show_spinner="Bootstrap intervals (1,000 resamples)...")
def _intervals(run_id: str, split: str, mtime_ns: int, workspace: str) -> Any:
    from core.evaluate.run_eval import run_bootstrap

    result = run_bootstrap(run_id, split, workspace, n_resamples=N_RESAMPLES)
    return dataclasses.replace(result, samples={})  # the resamples are not shown: keep the cache small


def _intervals_of(picked: list[RunRecord], split: str) -> dict[str, Any]:
    """Bootstrap intervals of each run with predictions on ``split`` (run id -> result)."""
    from core.errors import ChestLabError

    out = {}
    for rec in _evaluated(picked):
        mtime = _mtime(rec.id, split)
        if mtime is None:
            continue
        try:
            out[rec.id] = _intervals(rec.id, split, mtime, _workspace())
        except ChestLabError as exc:
            st.caption(f"No intervals for {rec.name}: {exc}")
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
    _interval_section(picked, split)
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
        "class's sensitivity). These call the most probable class; the operating point below chooses a "
        "threshold on val instead."
    )


def _interval_section(picked: list[RunRecord], split: str) -> None:
    results = _intervals_of(picked, split)
    if not results:
        return
    labels = _labels(picked)
    st.markdown(f"##### Metrics with 95% intervals ({split})")
    table = views.interval_table({labels[i]: r for i, r in results.items()})
    units = table["resampled"].unique()
    if len(units) == 1:  # the same images for every run: said once, below
        table = table.drop(columns=["resampled"])
    st.dataframe(table, key="cmp_intervals")
    on = f" on {split}: {units[0]}" if len(units) == 1 else ""
    st.caption(f"Macro averages over the classes, as `value [low-high]`{on}. {METHOD_NOTE}")
    with st.expander("Per class", icon=":material/table_rows:"):
        per_class = pd.DataFrame(
            {labels[i]: r.table().set_index("metric")["text"] for i, r in results.items()}
        )
        st.dataframe(per_class)


# ---------------------------------------------------------------- is A better than B?


@st.cache_data(max_entries=64, show_spinner="Paired bootstrap of the two runs (1,000 resamples)...")
def _comparison(run_a: str, run_b: str, split: str, metric: str, mtimes: tuple, workspace: str) -> Any:
    from core.evaluate.compare import compare_runs

    return compare_runs(run_a, run_b, split, metric, workspace=workspace, n_resamples=N_RESAMPLES)


def _ab_section(picked: list[RunRecord]) -> None:
    st.subheader("Is one run better than another?")
    done = _evaluated(picked)
    if len(done) < 2:
        st.caption(
            "Select two finished runs of the same task: a paired bootstrap on the same images says whether "
            "one is better, or whether no difference can be shown."
        )
        return
    labels = _labels(done)
    ids = [r.id for r in done]
    c = st.columns([3, 3, 2, 1.4], vertical_alignment="bottom")
    # The newest run is B: "is the new one better than the one before?"
    a, b = _default_pair(done)
    run_a = c[0].selectbox("Run A", ids, index=a, format_func=labels.get, key="cmp_ab_a")
    run_b = c[1].selectbox("Run B", ids, index=b, format_func=labels.get, key="cmp_ab_b")
    classes = _intervals(run_a, "val", _mtime(run_a, "val"), _workspace()).classes
    options = [*AB_METRICS, *(f"{m}/{k}" for m in ("auc", "sensitivity", "specificity") for k in classes)]
    metric = c[2].selectbox("Metric", options, format_func=views.metric_label, key="cmp_ab_metric")
    split = c[3].segmented_control("Split", ["val", "test"], default="val", required=True, key="cmp_ab_split")
    if run_a == run_b:
        st.info("Pick two different runs.", icon=":material/compare_arrows:")
        return
    mtimes = (_mtime(run_a, split), _mtime(run_b, split))
    if None in mtimes:
        st.info(f"No {split} predictions for both runs yet.", icon=":material/hourglass_top:")
        return
    result = dataclasses.replace(
        _comparison(run_a, run_b, split, metric, mtimes, _workspace()),
        name_a=labels[run_a],
        name_b=labels[run_b],
    )
    if not result.significant:
        st.info(result.sentence, icon=":material/balance:")
    elif result.difference > 0:
        st.success(result.sentence, icon=":material/trending_up:")
    else:
        st.warning(result.sentence, icon=":material/trending_down:")
    m = st.columns(4)
    m[0].metric(f"A: {labels[run_a]}", _num(result.a))
    m[1].metric(f"B: {labels[run_b]}", _num(result.b))
    lo, hi = result.ci
    m[2].metric("B - A", _num(result.difference, signed=True), help="the difference on these images")
    m[3].metric("95% interval", f"[{_num(lo, signed=True)}, {_num(hi, signed=True)}]")
    st.caption(
        f"Paired bootstrap: both runs scored on the same {N_RESAMPLES:,} resamples of the {split} images "
        "(whole patients when known), stratified by class; the difference's percentile interval and a "
        f"two-sided p-value ({result.p_value:.3f}). Differences between seeds of one experiment are the "
        "yardstick: see the seed groups above."
    )


def _num(x: float | None, digits: int = 3, signed: bool = False) -> str:
    if x is None or x != x:
        return "n/a"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


# ---------------------------------------------------------------- one run: operating point, calibration, ...


@st.cache_data(max_entries=32, show_spinner="Reading the predictions and the dataset's metadata...")
def _frames(
    run_id: str, split: str, mtimes: tuple, workspace: str
) -> tuple[pd.DataFrame, pd.DataFrame, list]:
    """The run's predictions on ``split`` joined with its dataset's metadata, its val
    predictions (where thresholds are chosen) and its classes."""
    from core.evaluate.run_eval import load_predictions, run_config, run_index, with_metadata

    df, classes = load_predictions(run_id, split, "best", workspace)
    val = df if split == "val" else load_predictions(run_id, "val", "best", workspace)[0]
    df = with_metadata(df, run_index(run_config(run_id, workspace), workspace))
    return df, val, classes


@st.cache_data(max_entries=32, show_spinner="Subgroup metrics with intervals...")
def _subgroups(
    run_id: str, split: str, mtimes: tuple, workspace: str, columns: tuple, positive: str, threshold: float
) -> Any:
    from core.evaluate.subgroups import subgroup_metrics

    df, _, classes = _frames(run_id, split, mtimes, workspace)
    return subgroup_metrics(
        df, classes, list(columns), positive=positive, threshold=threshold, n_resamples=N_RESAMPLES
    )


def _run_section(picked: list[RunRecord]) -> None:
    from core.evaluate.operating_point import default_positive, operating_point

    st.subheader("Evaluate one run")
    done = _evaluated(picked)
    if not done:
        st.caption("A finished run's operating point, calibration, subgroups and report appear here.")
        return
    labels = _labels(done)
    c = st.columns([4, 1.5, 2.5], vertical_alignment="bottom")
    run_id = c[0].selectbox("Run", [r.id for r in done], format_func=labels.get, key="cmp_ev_run")
    rec = next(r for r in done if r.id == run_id)
    split = c[1].segmented_control(
        "Reported on", ["test", "val"], default="test", required=True, key="cmp_ev_split",
        help="The threshold is always chosen on val, then reported on this split.",
    )  # fmt: skip
    if _mtime(run_id, split) is None:
        split = "val"
        st.caption(f"{rec.name} has no test predictions: everything below is on val.")
    mtimes = (_mtime(run_id, split), _mtime(run_id, "val"))
    df, val, classes = _frames(run_id, split, mtimes, _workspace())
    positive = c[2].selectbox(
        "Positive class",
        classes,
        index=classes.index(default_positive(classes)),
        key=f"cmp_ev_pos_{run_id}",
        help="One-vs-rest: this class against all the others.",
    )
    c = st.columns([3, 1, 3], vertical_alignment="bottom")
    rule = c[0].segmented_control(
        "Threshold chosen on val for",
        list(RULES),
        default="sensitivity",
        required=True,
        format_func=RULES.get,
        key="cmp_ev_rule",
    )
    target = c[1].number_input(
        "Target", 0.5, 0.999, 0.95, 0.01, format="%.3g", key="cmp_ev_target", disabled=rule == "youden"
    )
    op = operating_point(
        val, df, classes, positive=positive, rule=rule, target=target, split=split, single_logit=len(classes) == 2
    )  # fmt: skip
    tabs = st.tabs(list(EVAL_TABS.values()), key="cmp_ev_tab", on_change="rerun")
    render = {
        "op": lambda: _op_tab(op, split),
        "cal": lambda: _calibration_tab(rec, df, val, classes),
        "sub": lambda: _subgroup_tab(rec, split, mtimes, df, op),
        "report": lambda: _report_tab(rec, split),
    }
    for tab, (name, fn) in zip(tabs, render.items(), strict=True):
        if tab.open:
            with tab, guard(f"the {name} tab"):
                fn()


def _op_tab(op: Any, split: str) -> None:
    pos, r, v = op.positive_class, op.result, op.val
    st.markdown(
        f"**Threshold {op.threshold:.3f}**: call {pos} when P({pos}) ≥ {op.threshold:.3f}, the threshold "
        f"chosen on val ({v.n:,} images) for "
        + (f"{op.rule} ≥ {op.target:g}" if op.rule != "youden" else "the best Youden's J (sensitivity + "
           "specificity - 1)")
        + f"; reported on {split} ({r.n:,} images)."
    )  # fmt: skip
    m = st.columns(4)
    for col, name, value, on_val in (
        (m[0], "sensitivity", r.sensitivity, v.sensitivity),
        (m[1], "specificity", r.specificity, v.specificity),
        (m[2], "PPV", r.ppv, v.ppv),
        (m[3], "NPV", r.npv, v.npv),
    ):
        col.metric(
            f"{name} ({split})", _num(value), help=f"on val, where the threshold was chosen: {_num(on_val)}"
        )
    left, right = st.columns([3, 2])
    table = op.table().set_index("split")
    left.dataframe(
        table,
        column_config={k: st.column_config.NumberColumn(k, format="%.3f") for k in ("sensitivity", "specificity",
                                                                                 "ppv", "npv")},
    )  # fmt: skip
    names = [f"not {pos}", pos]
    right.plotly_chart(
        figs.confusion_figure(r.matrix, names, f"{split} at threshold {op.threshold:.3f}", height=280),
        key="cmp_op_cm",
    )
    notes = [
        "The confusion matrices above call the most probable class; here the threshold is explicit, "
        "chosen on val, never a silent 0.5."
    ]
    if op.logit_threshold is not None:
        notes.append(f"As log-odds (a BCE run's logit): {op.logit_threshold:.3f}.")
    if split == "val":
        notes.append("Reported on val, where it was chosen: optimistic. Test predictions show how it holds.")
    st.caption(" ".join(notes))


def _calibration_tab(rec: RunRecord, df: pd.DataFrame, val: pd.DataFrame, classes: list[str]) -> None:
    from core.evaluate import calibration as cal
    from core.evaluate.run_eval import probs_of

    ws = _workspace()
    c = st.columns([2, 3], vertical_alignment="center")
    if c[0].button(
        "Fit temperature on val",
        key="cmp_ev_fit",
        icon=":material/thermostat:",
        help="One number T, fitted on val by minimising the negative log likelihood, stored with the run. "
        "It softens (T > 1) or sharpens the probabilities; the predicted class never changes.",
    ):
        fit = cal.calibrate(val["target"].to_numpy(), probs_of(val, classes), classes)
        cal.save_temperature(rec.id, fit, ws)
        st.toast(f"Temperature {fit.temperature:.2f} fitted on val and stored with {rec.name}.",
                 icon=":material/thermostat:")  # fmt: skip
    fit = cal.load_temperature(rec.id, ws)
    apply = c[1].toggle(
        "Apply the run's temperature", key="cmp_ev_apply", disabled=fit is None,
        help="Fit one on val first." if fit is None else None,
    )  # fmt: skip
    y, probs = df["target"].to_numpy(), probs_of(df, classes)
    if apply and fit is not None:
        probs = cal.apply_temperature(probs, fit.temperature)
    metrics = cal.calibration_metrics(y, probs, classes)
    m = st.columns(3)
    m[0].metric("ECE", _num(metrics["ece"]), help="Expected calibration error of the top label (10 bins): "
                "the mean gap between confidence and accuracy. 0 is perfect.")  # fmt: skip
    m[1].metric("Brier", _num(metrics["brier"]), help="Mean squared error of the probabilities, averaged "
                "over classes. Lower is better.")  # fmt: skip
    m[2].metric("NLL", _num(metrics["nll"]), help="Negative log likelihood of the true class.")
    st.plotly_chart(eval_figs.reliability_figure(cal.reliability(y, probs, classes)), key="cmp_reliability")
    per_class = pd.DataFrame(
        {"ECE": [metrics[f"ece/{k}"] for k in classes], "Brier": [metrics[f"brier/{k}"] for k in classes]},
        index=pd.Index(classes, name="class"),
    )
    st.dataframe(per_class, width="content", column_config={k: st.column_config.NumberColumn(k, format="%.3f")
                                                            for k in ("ECE", "Brier")})  # fmt: skip
    note = (
        "Reliability: each point is a bin of images, its predicted probability against how often it came "
        "true (on the diagonal = calibrated; below = over-confident)."
    )
    if fit is not None:
        note += (
            f" Temperature T = {fit.temperature:.2f}, fitted on val ({fit.n_images:,} images): val NLL "
            f"{fit.nll_before:.3f} → {fit.nll_after:.3f}, ECE {fit.ece_before:.3f} → {fit.ece_after:.3f}"
            + (" (applied above)." if apply else " (not applied above).")
        )
    st.caption(note)


def _subgroup_tab(rec: RunRecord, split: str, mtimes: tuple, df: pd.DataFrame, op: Any) -> None:
    from core.evaluate.subgroups import default_columns

    skip = {"path", "label", "split", "patient_id", "target", "pred", "true_class", "pred_class"}
    candidates = [c for c in df.columns if c not in skip and not str(c).startswith("prob/")]
    if not candidates:
        st.info(
            "No metadata to split by: this run's dataset has no columns beyond the label and the split "
            "(or it cannot be read any more).",
            icon=":material/info:",
        )
        return
    default = [c for c in default_columns(df) if c in candidates]
    columns = st.multiselect(
        "Split the images by", candidates, default=default, key=f"cmp_ev_cols_{rec.id}",
        help="Sex, age band, view and modality are picked when the dataset has them; any column can be added.",
    )  # fmt: skip
    if not columns:
        st.caption("Pick one or more columns.")
        return
    sub = _subgroups(
        rec.id, split, mtimes, _workspace(), tuple(columns), op.positive_class, float(op.threshold)
    )
    gap = sub.gap
    if gap is not None and gap["gap"] <= 0:
        st.info(
            f"No gap in sensitivity for {op.positive_class} (missed disease) between the groups of {sub.min_n} "
            f"images or more: every one has {gap['low']['sensitivity']:.2f}.",
            icon=":material/groups:",
        )
    elif gap is not None and not gap["overlap"]:
        st.warning(sub.gap_sentence, icon=":material/warning:")
    else:
        st.info(sub.gap_sentence, icon=":material/groups:")
    table = views.subgroup_table(sub)
    st.dataframe(table, hide_index=True, key="cmp_subgroups", height=min(38 + 35 * len(table), 640))
    st.caption(
        f"On {split}. Sensitivity and specificity for {op.positive_class} at the operating point's threshold "
        f"({op.threshold:.3f}, chosen on val); AUC and balanced accuracy over all classes. {METHOD_NOTE} "
        f"Groups under {sub.min_n} images are shown but too small to read."
    )
    for column, why in sub.skipped.items():
        st.caption(f"{column}: {why}")


def _report_tab(rec: RunRecord, split: str) -> None:
    from core.evaluate.report import report_html

    st.caption(
        f"One self-contained HTML page for {rec.name} on {split}: config, dataset and leakage audit, curves, "
        "metrics with intervals, operating point, calibration, subgroups, shortcut probe and CAM scores. "
        "It opens offline and can be mailed as one file. Its operating point is the default one (sensitivity "
        "≥ 0.95 on val for the second class), whatever is chosen above."
    )
    key = [rec.id, split]
    if st.button("Build the report", key="cmp_report_build", icon=":material/description:"):
        bar, progress = progress_bar("Building the report")
        start = time.perf_counter()
        with st.spinner("Building the report: intervals, subgroups, leakage audit, shortcut probe..."):
            html = report_html(rec.id, split, _workspace(), n_resamples=N_RESAMPLES, progress=progress)
        bar.empty()
        st.session_state["cmp_report"] = {
            "key": key,
            "html": html.encode("utf-8"),
            "seconds": time.perf_counter() - start,
        }
    built = st.session_state.get("cmp_report")
    if not built or built["key"] != key:
        return
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", rec.name or rec.id).strip("-") or rec.id
    st.download_button(
        "Download report (HTML)",
        data=built["html"],
        file_name=f"chestlab-{slug}-{split}.html",
        mime="text/html",
        on_click="ignore",
        type="primary",
        icon=":material/download:",
        key="cmp_report_download",
    )
    st.caption(f"Built in {built['seconds']:.1f} s, {len(built['html']) / 2**20:.1f} MB (plotly.js inside).")


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
    with guard("the comparison of two runs"):
        _ab_section(picked)
    with guard("the evaluation of one run"):
        _run_section(picked)


main()
