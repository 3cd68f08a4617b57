"""Speed of the Compare page at 50 finished runs x 100 epochs (issue 5, "Compare page").

Fills a temporary workspace through the real store API (``create_run``, ``claim_run``,
``add_metrics``, ``finish``) with 50 finished runs of 100 epochs, each with the metric rows
the training loop writes (train and val metrics with per-class ones for three classes,
``lr``, ``images_per_s``, ``data_wait_share``, ``batch_loss`` every 10 steps, test metrics)
and val/test prediction tables, then times in one process:

- reading the metric rows of the selected runs from the store;
- building the figures of one page render with 10 runs selected (the auc and loss curves,
  ROC, PR and 10 confusion matrices), and the two curve figures with all 50 runs;
- full AppTest renders of the Compare page, with the page's default selection (5 runs) and
  with 10 runs selected, first render and a rerun.

    python bench/compare.py [--runs 50] [--epochs 100] [--seed 0]

Targets on 2 cores: building the figures < 0.5 s, a full AppTest render < 3 s.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLASSES = ("normal", "covid", "pneumonia")
METRICS = ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "precision", "f1", "auc", "pr_auc")
PER_CLASS = ("sensitivity", "specificity", "precision", "f1", "auc")
STEPS_PER_EPOCH = 22
N_PREDICTIONS = 150
TARGETS = {"figures": 0.5, "page": 3.0}


def _epoch_rows(rng: np.random.Generator, e: int, epochs: int, t: float, quality: float) -> list[Any]:
    from core.train.reporter import MetricRow

    step = e * STEPS_PER_EPOCH
    progress = e / epochs
    rows = [
        MetricRow(
            e,
            step - STEPS_PER_EPOCH + s,
            "train",
            "batch_loss",
            float(1.2 * np.exp(-2 * progress) + rng.random() * 0.2),
            t,
        )
        for s in range(0, STEPS_PER_EPOCH, 10)
    ]
    for split, gap in (("train", 0.05), ("val", 0.0)):
        base = 0.5 + quality * (1 - np.exp(-4 * progress)) + gap + rng.normal(0, 0.01)
        values = {m: float(np.clip(base - 0.02 * i, 0, 1)) for i, m in enumerate(METRICS)}
        values["loss"] = float(np.exp(-2 * progress) + 0.2 - gap + rng.normal(0, 0.01))
        for m in PER_CLASS:
            for c in CLASSES:
                values[f"{m}/{c}"] = float(np.clip(base + rng.normal(0, 0.03), 0, 1))
        rows += [MetricRow(e, step, split, k, v, t) for k, v in values.items()]
    rows += [
        MetricRow(e, step, "train", k, v, t)
        for k, v in (("lr", 1e-3 * (1 - progress)), ("images_per_s", 250.0), ("data_wait_share", 0.05))
    ]
    return rows


def _predictions(rng: np.random.Generator, quality: float, y: np.ndarray) -> pd.DataFrame:
    """A run's predictions on a split whose true labels ``y`` every run shares (the same
    images of the same task, as the page's evaluation requires)."""
    logits = rng.normal(0, 1, (N_PREDICTIONS, len(CLASSES)))
    logits[np.arange(N_PREDICTIONS), y] += 1 + 3 * quality
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    df = pd.DataFrame(
        {"path": [f"/data/{i:05d}.png" for i in range(N_PREDICTIONS)], "target": y, "pred": p.argmax(1)}
    )
    df["true_class"] = [CLASSES[i] for i in y]
    df["pred_class"] = [CLASSES[i] for i in df["pred"]]
    for k, c in enumerate(CLASSES):
        df[f"prob/{c}"] = p[:, k]
    return df


def fill_store(workspace: Path, n_runs: int, epochs: int, seed: int) -> int:
    """Finished runs through the store's API; returns the number of metric rows."""
    from core.runs import run_dir
    from core.runs.store import RunStore
    from core.train.reporter import MetricRow

    store = RunStore(workspace=workspace)
    rng = np.random.default_rng(seed)
    labels = {
        split: np.random.default_rng([seed, k]).integers(0, len(CLASSES), N_PREDICTIONS)
        for k, split in enumerate(("val", "test"))
    }
    archs, losses = ("resnet18", "resnet50", "densenet121", "efficientnet_b0"), ("weighted_ce", "focal", "ce")
    n_rows = 0
    for i in range(n_runs):
        config = {
            "arch": archs[i % len(archs)],
            "loss": losses[i % len(losses)],
            "sampler": "oversample" if i % 5 == 0 else "none",
            "lr": float(10 ** rng.uniform(-4, -2)),
            "epochs": epochs,
            "seed": i,
            "monitor": "auc",
            "tags": ["bench", f"group{i % 3}"],
        }
        rec = store.create_run(config)
        store.claim_run(rec.id, "bench")
        quality = rng.uniform(0.2, 0.45)
        t0 = time.time() - 3600
        rows: list[Any] = []
        for e in range(1, epochs + 1):
            rows += _epoch_rows(rng, e, epochs, t0 + 30 * e, quality)
        aucs = [r.value for r in rows if r.split == "val" and r.name == "auc"]
        best_epoch = int(np.argmax(aucs)) + 1
        best = {
            f"val_{r.name}": r.value
            for r in rows
            if r.split == "val" and r.epoch == best_epoch and "/" not in r.name
        }
        test = {m: float(np.clip(aucs[best_epoch - 1] - 0.02, 0, 1)) for m in METRICS}
        rows += [MetricRow(best_epoch, epochs * STEPS_PER_EPOCH, "test", k, v) for k, v in test.items()]
        store.add_metrics(rec.id, rows)
        store.set_info(rec.id, classes=list(CLASSES), last_epoch=epochs)
        store.finish(rec.id, "done", best={**best, "best_epoch": best_epoch}, test=test)
        folder = run_dir(rec.id, workspace)
        folder.mkdir(parents=True, exist_ok=True)
        for split in ("val", "test"):
            _predictions(rng, quality, labels[split]).to_csv(folder / f"predictions_{split}.csv", index=False)
        n_rows += len(rows)
    return n_rows


class Timer:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, float]] = []

    def time(self, name: str, fn: Callable[[], Any], kind: str = "", repeat: int = 1) -> Any:
        best, out = float("inf"), None
        for _ in range(repeat):
            t = time.perf_counter()
            out = fn()
            best = min(best, time.perf_counter() - t)
        self.rows.append((name, kind, best))
        return out

    def report(self) -> bool:
        ok = True
        print(f"\n{'step':<58} {'seconds':>8}  target")
        for name, kind, s in self.rows:
            target = TARGETS.get(kind)
            verdict = ""
            if target is not None:
                met = s < target
                ok &= met
                verdict = f"< {target:g} s {'met' if met else 'MISSED'}"
            print(f"{name:<58} {s:>8.3f}  {verdict}")
        return ok


def bench_figures(t: Timer, n_selected: int) -> None:
    from core.plots import runs as figs
    from core.runs import run_dir, views
    from core.runs.store import RunStore

    store = RunStore()
    runs = store.list_runs()
    picked = runs[:n_selected]
    rows = t.time(
        f"read metric rows of {n_selected} runs from the store",
        lambda: {r.id: store.metrics(r.id)[0] for r in picked},
    )
    all_rows = t.time(
        f"read metric rows of all {len(runs)} runs", lambda: {r.id: store.metrics(r.id)[0] for r in runs}
    )
    t.time("import sklearn.metrics (once per server, for ROC / PR)", lambda: __import__("sklearn.metrics"))
    preds = {r.id: pd.read_csv(run_dir(r.id) / "predictions_val.csv") for r in picked}

    def page_figures(
        selected: list[Any], metric_rows: dict[str, pd.DataFrame], with_predictions: bool
    ) -> int:
        colors = figs.run_colors([r.id for r in selected])
        starts = views.run_starts(selected, metric_rows)
        curve_runs = [
            figs.CurveRun(r.id, r.name, colors[r.id], views.best_epoch(r), starts[r.id]) for r in selected
        ]
        long = pd.concat(list(metric_rows.values()), ignore_index=True)
        out = [figs.curves_figure(long, m, curve_runs) for m in ("auc", "loss")]
        if with_predictions:
            pairs = [(c, preds[c.id]) for c in curve_runs]
            out += [figs.roc_figure(pairs, "covid"), figs.pr_figure(pairs, "covid")]
            for c, df in pairs:
                out.append(figs.confusion_figure(figs.confusion_counts(df, len(CLASSES)), CLASSES, c.label))
            views.selected_runs_table(selected, metric_rows)
        return len(out)

    t.time(
        f"figures of a render, {n_selected} runs: 2 curves, ROC, PR, {n_selected} confusion, table",
        lambda: page_figures(picked, rows, True),
        "figures",
        repeat=3,
    )
    t.time(
        f"curve figures (auc, loss) of all {len(runs)} runs x 100 epochs",
        lambda: page_figures(runs, all_rows, False),
        "figures",
        repeat=3,
    )


def bench_page(t: Timer, n_selected: int) -> None:
    from streamlit.testing.v1 import AppTest

    page = str(ROOT / "pages" / "compare.py")

    def render(at: Any) -> Any:
        at.run()
        _check(at)
        return at

    at = AppTest.from_file(page, default_timeout=120)
    t.time("AppTest render, first (default selection: 5 runs)", lambda: render(at), "page")
    t.time("AppTest rerun (5 runs, metric rows in the session)", lambda: render(at), "page")
    at = AppTest.from_file(page, default_timeout=120)
    at.session_state["cmp_runs"] = {"selection": {"rows": list(range(n_selected))}}
    t.time(f"AppTest render, first ({n_selected} runs selected)", lambda: render(at), "page")
    t.time(f"AppTest rerun ({n_selected} runs selected)", lambda: render(at), "page")
    charts = len(at.get("plotly_chart"))
    print(
        f"render with {n_selected} selected: {charts} plotly charts, "
        f"{len(at.session_state['cmp_metric_rows'])} runs' rows in the session"
    )


def _check(at: Any) -> None:
    if at.exception or at.error:
        raise SystemExit(f"the page failed: {[e.value for e in [*at.exception, *at.error]]}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--selected", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="chestlab-bench-compare-") as tmp:
        ws = Path(tmp) / "workspace"
        os.environ["CHESTLAB_WORKSPACE"] = str(ws)
        t = Timer()
        n_rows = t.time(
            f"fill the store: {args.runs} runs x {args.epochs} epochs (real API)",
            lambda: fill_store(ws, args.runs, args.epochs, args.seed),
        )
        print(
            f"{args.runs} runs, {n_rows:,} metric rows, store {(ws / 'chestlab.db').stat().st_size / 2**20:.1f} MB"
        )
        bench_figures(t, args.selected)
        bench_page(t, args.selected)
        ok = t.report()
    print("\nall targets met" if ok else "\nsome targets MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
