"""The Compare page's evaluation tables (core.runs.views): intervals as ``0.91 [0.87-0.94]``
per run, the interval column beside its point value, runs repeated over seeds as mean ± sd,
and the subgroup table with its too-small groups marked."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.evaluate.bootstrap import bootstrap_metrics
from core.evaluate.compare import group_by_seed
from core.evaluate.subgroups import subgroup_metrics
from core.runs import views
from core.runs.store import RunRecord, RunStatus

CLASSES = ["normal", "pneumonia"]


def _scores(n: int, seed: int, noise: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = 1 / (1 + np.exp(-((y - 0.5) * 3 + rng.normal(0, noise, n))))
    return y, np.column_stack([1 - p, p])


def _record(run_id: str, seed: int, best: dict, **config) -> RunRecord:
    cfg = {"arch": "resnet18", "epochs": 3, "seed": seed, **config}
    return RunRecord(id=run_id, name=f"r-s{seed}", status=RunStatus.DONE, config=cfg, best=best)


def test_interval_table_shows_value_and_interval_per_run():
    y, p = _scores(200, 0)
    result = bootstrap_metrics(y, p, CLASSES, n_resamples=200)
    table = views.interval_table({"run a": result})
    assert list(table.columns) == [
        "AUC",
        "PR-AUC",
        "sensitivity",
        "specificity",
        "balanced accuracy",
        "resampled",
    ]
    lo, hi = result.ci["auc"]
    assert table.loc["run a", "AUC"] == f"{result.estimates['auc']:.2f} [{lo:.2f}-{hi:.2f}]"
    assert lo < result.estimates["auc"] < hi
    assert table.loc["run a", "resampled"] == "200 images"
    patients = bootstrap_metrics(y, p, CLASSES, np.arange(200) // 2, n_resamples=50)
    assert views.resampled_units(patients) == "200 images (100 patients)"


def test_the_interval_column_sits_after_its_point_value():
    records = [_record("a", 0, {"val_auc": 0.8}), _record("b", 1, {"val_auc": 0.9})]
    table = views.selected_runs_table(records)
    out = views.with_interval_column(table, records, {"b": "0.90 [0.85-0.94]"}, "val auc (95% CI)")
    cols = list(out.columns)
    assert cols[cols.index("val auc") + 1] == "val auc (95% CI)"
    assert out["val auc (95% CI)"].tolist() == ["", "0.90 [0.85-0.94]"]
    assert views.with_interval_column(table, records, {}, "val auc (95% CI)") is table


def test_runs_that_differ_only_by_seed_are_one_row_with_mean_and_sd():
    records = [
        _record("a", 0, {"val_auc": 0.80, "val_loss": 0.5, "best_epoch": 3}),
        _record("b", 1, {"val_auc": 0.90, "val_loss": 0.4, "best_epoch": 2}),
        _record("c", 0, {"val_auc": 0.70, "best_epoch": 1}, arch="resnet34"),
    ]
    table = views.seed_table(records, group_by_seed(records))
    assert len(table) == 2
    two = table.loc["r · arch=resnet18 (2 seeds)"]
    assert two["runs"] == 2 and two["seeds"] == "0, 1"
    assert two["val auc"] == f"0.850 ± {np.std([0.8, 0.9], ddof=1):.3f}"
    # Both experiments are named "r": the field that differs tells them apart.
    assert table.loc["r · arch=resnet34", "val auc"] == "0.700"  # a lone run: its value, no sd
    assert list(table.index) == ["r · arch=resnet18 (2 seeds)", "r · arch=resnet34"]


def test_subgroup_table_marks_small_groups_and_names_the_positive_class():
    y, p = _scores(160, 1)
    df = pd.DataFrame({"target": y, "prob/normal": p[:, 0], "prob/pneumonia": p[:, 1]})
    df["sex"] = np.where(np.arange(160) < 140, "F", "M")
    report = subgroup_metrics(df, CLASSES, ["sex"], positive="pneumonia", threshold=0.5, n_resamples=50)
    table = views.subgroup_table(report)
    assert table["group"].tolist() == ["F", "M"] and table["images"].tolist() == [140, 20]
    assert table["note"].tolist() == ["", "too small (< 30)"]
    assert "sensitivity (pneumonia)" in table.columns and "patients" not in table.columns


@pytest.mark.parametrize(
    "name, label", [("auc", "AUC"), ("sensitivity/covid", "sensitivity (covid)"), ("brier", "brier")]
)
def test_metric_labels(name, label):
    assert views.metric_label(name) == label
