"""One self-contained HTML page per run: what a reader needs to trust (or not) its numbers.

Sections: key findings, the run's configuration, the dataset and its leakage audit, the
training curves, metrics with bootstrap intervals (ROC and PR curves, confusion matrix),
the operating point chosen on val, calibration (reliability diagram, ECE, Brier), subgroups,
the shortcut probe, and CAM scores when ``python -m core cam RUN_ID --split S`` computed
them. plotly.js is inlined once in the page's head and every figure is a div that uses it,
so the page opens offline and can be mailed as one file (about 5 MB, most of it plotly.js).

The figures come from ``core.plots.evaluate`` (the Compare page draws the same ones).
"""

from __future__ import annotations

import html
import json
import math
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.plots.evaluate import (
    confusion_figure,
    pr_figure,
    reliability_figure,
    roc_figure,
    seed_band_figure,  # noqa: F401  (kept importable from here)
    training_curves_figure,
)
from core.progress import ProgressFn, no_progress

CONFIG_FIELDS = (
    "arch",
    "pretrained",
    "in_channels",
    "img_size",
    "loss",
    "sampler",
    "optimizer",
    "lr",
    "weight_decay",
    "schedule",
    "epochs",
    "batch_size",
    "augment",
    "normalize",
    "freeze",
    "monitor",
    "early_stopping",
    "precision",
    "seed",
    "allow_leakage",
)
SECTIONS = (
    "findings",
    "config",
    "dataset",
    "curves",
    "metrics",
    "operating-point",
    "calibration",
    "subgroups",
    "probe",
    "cam",
)


# ---------------------------------------------------------------- gathering


@dataclass
class ReportData:
    run_id: str
    split: str
    record: Any
    config: dict[str, Any]
    classes: list[str]
    predictions: pd.DataFrame
    evaluation: dict[str, Any]
    boot: Any
    reliability: pd.DataFrame
    subgroups: Any
    table: pd.DataFrame | None  # the task's table (class balance per split)
    leakage: Any = None
    probe: Any = None
    metrics: pd.DataFrame | None = None
    cam: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def gather(
    run_id: str,
    split: str = "test",
    workspace: Any = None,
    *,
    n_resamples: int = 1000,
    probe: bool = True,
    seed: int = 0,
    progress: ProgressFn = no_progress,
) -> ReportData:
    """Everything the report shows, computed once."""
    from core.errors import ChestLabError
    from core.evaluate.bootstrap import bootstrap_metrics
    from core.evaluate.calibration import load_temperature, reliability
    from core.evaluate.run_eval import (
        base_metrics,
        load_predictions,
        operating_point_json,
        probs_of,
        run_index,
        with_metadata,
    )
    from core.evaluate.subgroups import subgroup_metrics
    from core.runs.store import RunStore

    store = RunStore(workspace=workspace)
    record = store.get_run(run_id)
    config = dict(record.config)
    progress(0, 6, "predictions")
    df, classes = load_predictions(run_id, split, "best", workspace)
    val = df if split == "val" else load_predictions(run_id, "val", "best", workspace)[0]
    index = run_index(config, workspace)
    df = with_metadata(df, index)
    notes = (
        []
        if index is not None
        else [f"the dataset {config.get('data')} cannot be read any more: no subgroups"]
    )
    y, p = df["target"].to_numpy(), probs_of(df, classes)
    progress(1, 6, "intervals")
    ev = base_metrics(run_id, split, df, classes)
    boot = bootstrap_metrics(
        y,
        p,
        classes,
        df["patient_id"].to_numpy() if "patient_id" in df else None,
        n_resamples=n_resamples,
        seed=seed,
    )
    ev["operating_point"] = operating_point_json(val, df, classes, split=split)
    from core.evaluate.calibration import calibration_metrics

    ev["calibration"] = calibration_metrics(y, p, classes)
    fit = load_temperature(run_id, workspace)
    ev["temperature"] = fit.to_json() if fit else None
    progress(2, 6, "subgroups")
    sub = (
        subgroup_metrics(
            df,
            classes,
            None,
            threshold=ev["operating_point"].get("threshold"),
            positive=ev["operating_point"].get("positive_class"),
            n_resamples=n_resamples,
            seed=seed,
        )
        if index is not None
        else None
    )
    data = ReportData(
        run_id,
        split,
        record,
        config,
        classes,
        df,
        ev,
        boot,
        reliability(y, p, classes),
        sub,
        None,
        notes=notes,
    )
    progress(3, 6, "leakage audit")
    try:
        from core.evaluate.leakage import check_leakage, task_table

        data.table = task_table(config, workspace)
        data.leakage = check_leakage(config, workspace, images="cached")
    except ChestLabError as exc:
        data.notes.append(f"dataset and audit unavailable: {exc}")
    progress(4, 6, "shortcut probe")
    if probe and data.table is not None:
        from core.evaluate.probe import probe_index

        try:
            data.probe = probe_index(
                data.table,
                "class_name",
                seed=seed,
                exclude=(str((config.get("task") or {}).get("label_column", "label")), "label"),
            )
        except ChestLabError as exc:
            data.notes.append(f"shortcut probe not run: {exc}")
    progress(5, 6, "curves and CAM scores")
    data.metrics, _ = store.metrics(run_id)
    data.cam = cam_scores(run_id, config, set(df["path"]), workspace)
    progress(6, 6, "")
    return data


def cam_scores(
    run_id: str, config: dict[str, Any], paths: set[str], workspace: Any = None
) -> list[dict[str, Any]]:
    """Per-method CAM scores over ``paths`` from the score cache ``python -m core cam --split``
    fills (default layers, target = true class, deletion or ROAD), or from
    ``cam_scores*.json`` in the run folder; [] when none were computed."""
    from core.runs import run_dir
    from core.workspace import cache_dir

    rows: list[dict[str, Any]] = []
    for f in sorted(run_dir(run_id, workspace).glob("cam_scores*.json")):
        rows += _score_rows(f)
    folder = cache_dir("cam_scores", workspace)
    if any(folder.glob("*.json")):
        for metric, f in _cached_score_files(run_id, config, folder, workspace):
            rows += [{**r, "faithfulness_metric": metric} for r in _score_rows(f)]
    rows = [r for r in rows if r.get("path") in paths and r.get("method")]
    return _summarise_scores(rows)


def _score_rows(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    values = data.values() if isinstance(data, dict) else data if isinstance(data, list) else []
    return [r for r in values if isinstance(r, dict)]


def _cached_score_files(
    run_id: str, config: dict[str, Any], folder: Path, workspace: Any
) -> list[tuple[str, Path]]:
    """The score cache's files of this run, named as ``core.explain.service`` names them
    (imports torch: only called when the cache holds any file)."""
    import hashlib

    from core.runs import run_dir

    try:
        from core.explain.scorecam import DEFAULT_TOP_K
        from core.explain.service import layer_names
        from core.train.checkpoint import BEST, LAST

        names = list(layer_names(str(config.get("arch", ""))))
    except Exception:  # noqa: BLE001 - an unknown arch or a changed module: no CAM section, no failed report
        return []
    out = []
    for ckpt in (BEST, LAST):
        path = run_dir(run_id, workspace) / "checkpoints" / ckpt
        if not path.exists():
            continue
        for metric in ("deletion", "road"):
            ident = json.dumps(
                [run_id, ckpt, os.path.getmtime(path), names, "true", metric, int(DEFAULT_TOP_K)]
            )
            f = folder / f"{hashlib.sha1(ident.encode()).hexdigest()[:24]}.json"
            if f.exists():
                out.append((metric, f))
        break  # the scores are of the checkpoint the run loads: best, else last
    return out


def _summarise_scores(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not rows:
        return []
    df = pd.DataFrame(rows)
    out = []
    for (method, metric), part in df.groupby(
        ["method", df.get("faithfulness_metric", pd.Series("", index=df.index))], sort=True
    ):

        def mean(col: str, part: pd.DataFrame = part) -> float | None:
            return float(pd.to_numeric(part[col], errors="coerce").mean()) if col in part else None

        out.append(
            {
                "method": method,
                "n_images": len(part),
                "energy_in_box": mean("energy_in_box"),
                "pointing_game": mean("pointing_game"),
                "faithfulness": mean("faithfulness"),
                "faithfulness_metric": metric or "",
                "seconds_per_image": mean("seconds"),
            }
        )
    return out


# ---------------------------------------------------------------- HTML

_CSS = """
body{font-family:"Source Sans Pro",Helvetica,Arial,sans-serif;margin:0 auto;max-width:1100px;
  padding:0 24px 48px;color:#222}
h1{font-size:26px;margin:24px 0 4px}
h2{font-size:20px;margin:36px 0 8px;border-bottom:2px solid #E6E6E6;padding-bottom:4px}
h3{font-size:16px;margin:18px 0 6px}.sub{color:#666;margin:0 0 16px}
table{border-collapse:collapse;margin:8px 0;font-size:14px}
th,td{border-bottom:1px solid #E6E6E6;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#F6F6F6}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.findings{background:#F4F8FB;border-left:4px solid #0072B2;padding:8px 16px;margin:12px 0}
.warn{background:#FFF6E5;border-left:4px solid #E69F00;padding:8px 16px;margin:8px 0}
.bad{background:#FDECEA;border-left:4px solid #D55E00;padding:8px 16px;margin:8px 0}.small{color:#888}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:16px}nav a{margin-right:12px}details{margin:8px 0}
pre{background:#F6F6F6;padding:8px;overflow-x:auto;font-size:12px}
.wide{overflow-x:auto}.wide td{white-space:nowrap}
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _n(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}f}" if isinstance(x, float) else _e(x)


def _table(df: pd.DataFrame, numeric_digits: int = 3) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in df.columns)
    body = []
    for row in df.itertuples(index=False):
        cells = []
        for v in row:
            if v is None or v is pd.NA:
                cells.append("<td class='num'>n/a</td>")
                continue
            num = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
            text = _n(float(v), numeric_digits) if isinstance(v, (float, np.floating)) else _e(v)
            cells.append(f"<td class='num'>{text}</td>" if num else f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _fig(fig: Any) -> str:
    import plotly.io as pio

    return pio.to_html(
        fig,
        include_plotlyjs=False,
        full_html=False,
        validate=False,
        config={"displaylogo": False, "responsive": True},
    )


def _findings(d: ReportData) -> str:
    ev, items = d.evaluation, []
    items.append(
        f"ROC-AUC on {d.split}: <b>{_e(d.boot.text('auc'))}</b> ({d.boot.n_images} images; 95% interval "
        f"from {d.boot.n_resamples} resamples of {d.boot.unit})"
    )
    op = ev["operating_point"]
    if op.get("threshold") is not None:
        items.append(
            f"Operating point: {_e(op['description'])}: sensitivity {_n(op['sensitivity'])}, specificity "
            f"{_n(op['specificity'])} on {d.split}"
        )
    items.append(f"Calibration: ECE {_n(ev['calibration']['ece'])}, Brier {_n(ev['calibration']['brier'])}")
    if d.subgroups is not None:
        items.append(_e(d.subgroups.gap_sentence))
    if d.probe is not None:
        items.append(_e(d.probe.summary))
    if d.leakage is not None:
        items.append(_e(d.leakage.summary))
    cls = (
        "bad"
        if (d.probe is not None and d.probe.flagged) or (d.leakage is not None and d.leakage.leaks)
        else "findings"
    )
    lis = "".join(f"<li>{i}</li>" for i in items)
    return f"<section id='findings'><div class='{cls}'><b>Key findings</b><ul>{lis}</ul></div></section>"


def _config_section(d: ReportData) -> str:
    c = d.config
    rows = pd.DataFrame(
        [
            (k, json.dumps(c[k]) if isinstance(c.get(k), (dict, list)) else str(c.get(k)))
            for k in CONFIG_FIELDS
            if k in c
        ],
        columns=["field", "value"],
    )
    best = pd.DataFrame(
        [(k, f"{v:.4f}" if isinstance(v, float) else str(v)) for k, v in (d.record.best or {}).items()],
        columns=["best (val)", "value"],
    )
    full = _e(json.dumps(c, indent=2, default=str))
    return (
        f"<section id='config'><h2>Run configuration</h2><div class='grid'><div>{_table(rows)}</div>"
        f"<div>{_table(best, 4) if len(best) else ''}</div></div>"
        f"<details><summary>full config JSON</summary><pre>{full}</pre></details></section>"
    )


def _dataset_section(d: ReportData) -> str:
    c = d.config
    task = c.get("task") or {}
    parts = [
        f"<p>Dataset <code>{_e(c.get('data'))}</code> (format {_e(c.get('format', 'auto'))}); task "
        f"<b>{_e(c.get('task_name') or task.get('name') or '(default: the dataset labels)')}</b>, classes "
        f"{_e(', '.join(d.classes))}.</p>"
    ]
    if d.table is not None:
        from core.data.tasks import class_balance

        balance = class_balance(d.table).reset_index()
        parts.append(_table(balance))
    if d.leakage is not None:
        lk = d.leakage
        cls = "bad" if lk.leaks else "warn" if lk.near_duplicate_images_across_splits else "findings"
        parts.append(f"<div class='{cls}'>Leakage audit: {_e(lk.summary)}</div>")
        if lk.split_pairs:
            parts.append(_table(pd.DataFrame(lk.split_pairs)))
    allowed = (d.record.info or {}).get("leakage")
    if allowed:
        summary = _e(allowed.get("summary", ""))
        parts.append(f"<div class='bad'>This run was trained with --allow-leakage: {summary}</div>")
    parts += [f"<p class='small'>{_e(n)}</p>" for n in d.notes]
    return "<section id='dataset'><h2>Dataset and audit</h2>" + "".join(parts) + "</section>"


def _curves_section(d: ReportData) -> str:
    if d.metrics is None or d.metrics.empty:
        return "<section id='curves'><h2>Training curves</h2><p>No metrics recorded.</p></section>"
    monitor = str(d.config.get("monitor", "auc"))
    names = ("loss", monitor) if monitor != "loss" else ("loss",)
    figure = _fig(training_curves_figure(d.metrics, names))
    return f"<section id='curves'><h2>Training curves</h2>{figure}</section>"


def _metrics_section(d: ReportData) -> str:
    from core.evaluate.bootstrap import MACRO_METRICS, PER_CLASS_METRICS

    b = d.boot
    macro = pd.DataFrame(
        [(m, b.text(m, 3)) for m in MACRO_METRICS], columns=["metric", "value [95% interval]"]
    )
    per = pd.DataFrame(
        [
            {
                "class": c,
                "images": d.evaluation["per_class"][c]["n"],
                **{m: b.text(f"{m}/{c}", 3) for m in PER_CLASS_METRICS},
            }
            for c in d.classes
        ]
    )
    note = (
        f"Percentile bootstrap, {b.n_resamples} resamples of {b.n_units} {b.unit}, stratified by class; "
        "sensitivity, specificity, accuracy at the argmax. Macro = mean over classes; for two classes "
        "AUC and PR-AUC are the positive (second) class's."
    )
    roc = _fig(roc_figure(d.predictions, d.classes, d.evaluation["operating_point"]))
    pr = _fig(pr_figure(d.predictions, d.classes))
    matrix = _fig(confusion_figure(d.evaluation["confusion_matrix"], d.classes, "confusion matrix (argmax)"))
    return (
        f"<section id='metrics'><h2>Metrics on {_e(d.split)} ({b.n_images} images)</h2>"
        f"<div class='grid'><div>{_table(macro)}</div><div>{matrix}</div></div>"
        f"{_table(per)}<p class='small'>{_e(note)}</p><div class='grid'><div><h3>ROC curves</h3>{roc}</div>"
        f"<div><h3>Precision-recall curves</h3>{pr}</div></div></section>"
    )


def _operating_section(d: ReportData) -> str:
    op = d.evaluation["operating_point"]
    if op.get("threshold") is None:
        why = _e(op.get("error", ""))
        return f"<section id='operating-point'><h2>Operating point</h2><p>None: {why}</p></section>"
    rows = []
    for name, r in (("val (chosen on)", op["val"]), (d.split, op)):
        rows.append(
            {
                "split": name,
                "sensitivity": r["sensitivity"],
                "specificity": r["specificity"],
                "PPV": r["ppv"],
                "NPV": r["npv"],
            }
        )
    pos = op["positive_class"]
    matrix = confusion_figure(
        op["confusion_matrix"], [f"not {pos}", pos], f"{d.split} at threshold {op['threshold']:.4g}"
    )
    logit = f" (logit {op['logit_threshold']:.3f})" if op.get("logit_threshold") is not None else ""
    return (
        f"<section id='operating-point'><h2>Operating point</h2><p>{_e(op['description'])}{_e(logit)}. "
        f"The threshold is chosen on val and applied unchanged to {_e(d.split)}; never a silent 0.5.</p>"
        f"<div class='grid'><div>{_table(pd.DataFrame(rows))}</div><div>{_fig(matrix)}</div></div></section>"
    )


def _calibration_section(d: ReportData) -> str:
    cal = d.evaluation["calibration"]
    rows = [{"curve": "all (top label ECE, mean Brier)", "ECE": cal["ece"], "Brier": cal["brier"]}]
    rows += [{"curve": c, "ECE": cal[f"ece/{c}"], "Brier": cal[f"brier/{c}"]} for c in d.classes]
    t = d.evaluation.get("temperature")
    temp = (
        f"<p>Temperature scaling fitted on val: T = {t['temperature']:.3f} (val NLL {t['nll_before']:.3f} -> "
        f"{t['nll_after']:.3f}, ECE {t['ece_before']:.3f} -> {t['ece_after']:.3f}); the numbers above are "
        "without it.</p>"
        if t
        else "<p class='small'>No temperature fitted (python -m core evaluate RUN_ID --calibrate fits one "
        "on val).</p>"
    )
    diagram = _fig(reliability_figure(d.reliability))
    return (
        f"<section id='calibration'><h2>Calibration</h2><div class='grid'><div>{_table(pd.DataFrame(rows))}"
        f"{temp}</div><div><h3>Reliability diagram</h3>{diagram}</div></div></section>"
    )


def _subgroups_section(d: ReportData) -> str:
    if d.subgroups is None:
        return "<section id='subgroups'><h2>Subgroups</h2><p>Not available (no metadata).</p></section>"
    s = d.subgroups
    if s.table.empty:
        return (
            "<section id='subgroups'><h2>Subgroups</h2><p>No sex, age, view, modality or source column "
            "in this dataset.</p></section>"
        )
    table = s.display_table(2)
    table["too_small"] = table["too_small"].map({True: f"< {s.min_n} images", False: ""})
    table = table[
        [
            "column",
            "value",
            "n",
            "n_patients",
            "n_positive",
            "too_small",
            "auc",
            "pr_auc",
            "pos_sensitivity",
            "pos_specificity",
            "ece",
            "brier",
        ]
    ]
    table = table.rename(
        columns={
            "pos_sensitivity": f"sensitivity ({s.positive_class})",
            "n_patients": "patients",
            "pos_specificity": f"specificity ({s.positive_class})",
            "too_small": "note",
            "n_positive": s.positive_class,
        }
    )
    where = "at the operating point" if s.threshold is not None else "at the argmax"
    cls = "warn" if s.gap and not s.gap["overlap"] else "findings"
    return (
        f"<section id='subgroups'><h2>Subgroups</h2><div class='{cls}'>{_e(s.gap_sentence)}</div>"
        f"<div class='wide'>{_table(table)}</div><p class='small'>Sensitivity and specificity of "
        f"{_e(s.positive_class)} {where}; AUC and PR-AUC as above; 95% intervals. Age bands 0-19, 20-39, "
        "40-59, 60-79, 80+. All metrics per group: python -m core evaluate --json.</p></section>"
    )


def _probe_section(d: ReportData) -> str:
    if d.probe is None:
        return "<section id='probe'><h2>Shortcut probe</h2><p>Not run.</p></section>"
    p = d.probe
    feats = pd.DataFrame([s.to_json() for s in p.metadata.scores + p.file_properties.scores])
    excluded = pd.DataFrame(list(p.excluded.items()), columns=["left out", "why"])
    return (
        f"<section id='probe'><h2>Shortcut probe</h2><div class='{'bad' if p.flagged else 'findings'}'>"
        f"{_e(p.summary)}</div>{_table(feats) if len(feats) else ''}"
        f"<details><summary>columns left out</summary>{_table(excluded)}</details></section>"
    )


def _cam_section(d: ReportData) -> str:
    if not d.cam:
        return (
            "<section id='cam'><h2>CAM scores</h2><p class='small'>None computed for this run "
            f"(python -m core cam {_e(d.run_id)} --split {_e(d.split)}).</p></section>"
        )
    return f"<section id='cam'><h2>CAM scores</h2>{_table(pd.DataFrame(d.cam))}</section>"


def render_html(d: ReportData) -> str:
    from plotly.offline import get_plotlyjs

    title = f"ChestLab evaluation: {d.record.name or d.run_id}"
    when = datetime.now(tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
    finished = (
        datetime.fromtimestamp(d.record.finished, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
        if d.record.finished
        else "-"
    )
    nav = "".join(f"<a href='#{s}'>{s.replace('-', ' ')}</a>" for s in SECTIONS)
    body = "".join(
        f(d)
        for f in (
            _findings,
            _config_section,
            _dataset_section,
            _curves_section,
            _metrics_section,
            _operating_section,
            _calibration_section,
            _subgroups_section,
            _probe_section,
            _cam_section,
        )
    )
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
        f"<style>{_CSS}</style><script type='text/javascript'>{get_plotlyjs()}</script></head><body>"
        f"<h1>{_e(title)}</h1><p class='sub'>run {_e(d.run_id)} · status {_e(d.record.status.value)} · "
        f"finished {finished} · evaluated on {_e(d.split)} · report written {when}</p><nav>{nav}</nav>"
        f"{body}</body></html>"
    )


def report_html(
    run_id: str,
    split: str = "test",
    workspace: Any = None,
    *,
    n_resamples: int = 1000,
    probe: bool = True,
    progress: ProgressFn = no_progress,
) -> str:
    """The page as a string (the app's download button)."""
    return render_html(
        gather(run_id, split, workspace, n_resamples=n_resamples, probe=probe, progress=progress)
    )


def write_report(
    run_id: str,
    out: str | os.PathLike[str] | None = None,
    *,
    split: str = "test",
    workspace: Any = None,
    n_resamples: int = 1000,
    probe: bool = True,
    progress: ProgressFn = no_progress,
) -> dict[str, Any]:
    """Write the page (default ``<run folder>/report_<split>.html``); ``{"path", "bytes", "seconds"}``."""
    from core.fileio import atomic_write_bytes
    from core.runs import run_dir

    start = time.perf_counter()
    text = report_html(run_id, split, workspace, n_resamples=n_resamples, probe=probe, progress=progress)
    path = Path(out) if out else run_dir(run_id, workspace) / f"report_{split}.html"
    atomic_write_bytes(path, text.encode("utf-8"))
    return {
        "path": str(path.resolve()),
        "bytes": path.stat().st_size,
        "seconds": round(time.perf_counter() - start, 3),
    }
