"""Subgroups: age bands, small groups marked, and the largest sensitivity gap named."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.evaluate.subgroups import MISSING, default_columns, group_values, subgroup_metrics

CLASSES = ["normal", "covid"]


def test_age_is_banded_and_blanks_are_missing():
    ages = pd.Series([5, 19.5, 20, 39, 40, 61, 79.9, 80, 95, None, ""], name="age", dtype=object)
    got = group_values(ages).tolist()
    assert got == [
        "0-19",
        "0-19",
        "20-39",
        "20-39",
        "40-59",
        "60-79",
        "60-79",
        "80+",
        "80+",
        MISSING,
        MISSING,
    ]
    assert group_values(pd.Series([33, 71], name="PatientAge")).tolist() == ["20-39", "60-79"]


def test_other_columns_keep_values_or_quartiles():
    sex = pd.Series(["M", "F", " F", None, "M"], name="sex")
    assert group_values(sex).tolist() == ["M", "F", "F", MISSING, "M"]
    width = pd.Series(np.arange(100, 200), name="file_width")
    groups = group_values(width)
    assert groups.nunique() == 4 and groups.value_counts().min() >= 24


def test_default_columns_pick_the_concepts_present():
    index = pd.DataFrame(
        {
            "path": ["a"],
            "PatientSex": ["F"],
            "sex": [None],
            "age": [40],
            "ViewPosition": ["PA"],
            "hospital": ["A"],
            "finding": ["x"],
        }
    )
    assert default_columns(index) == ["PatientSex", "age", "ViewPosition", "hospital"]


def _predictions(rng, n, miss_rate_for_f):
    """Two classes; the model misses covid in women far more often than in men."""
    sex = rng.choice(["F", "M"], n)
    y = (rng.random(n) < 0.4).astype(int)
    p = np.where(y == 1, 0.8, 0.2) + rng.normal(0, 0.05, n)
    missed = (y == 1) & (sex == "F") & (rng.random(n) < miss_rate_for_f)
    p[missed] = 0.1
    p = p.clip(0.01, 0.99)
    return pd.DataFrame(
        {
            "path": [f"i{i}" for i in range(n)],
            "target": y,
            "prob/normal": 1 - p,
            "prob/covid": p,
            "sex": sex,
            "view": rng.choice(["PA", "AP", "LL"], n, p=[0.55, 0.4, 0.05]),
            "patient_id": [f"p{i // 2}" for i in range(n)],
        }
    )


def test_the_largest_sensitivity_gap_is_named_with_counts_and_intervals():
    rng = np.random.default_rng(0)
    df = _predictions(rng, 600, miss_rate_for_f=0.5)
    report = subgroup_metrics(df, CLASSES, ["sex", "view"], n_resamples=300)
    gap = report.gap
    assert gap["column"] == "sex" and gap["low"]["value"] == "F" and gap["high"]["value"] == "M"
    assert gap["gap"] > 0.3 and not gap["overlap"]
    assert "Largest gap in sensitivity for covid" in report.gap_sentence and "sex F" in report.gap_sentence
    t = report.table.set_index(["column", "value"])
    assert t.loc[("sex", "F"), "pos_sensitivity_lo"] < t.loc[("sex", "F"), "pos_sensitivity"]
    assert t.loc[("view", "LL"), "too_small"] and not t.loc[("view", "PA"), "too_small"]
    assert t.loc[("sex", "F"), "n"] + t.loc[("sex", "M"), "n"] == 600
    assert t.loc[("sex", "F"), "n_patients"] <= t.loc[("sex", "F"), "n"]


def test_gap_uses_the_operating_point_threshold_when_given():
    rng = np.random.default_rng(1)
    df = _predictions(rng, 400, miss_rate_for_f=0.0)
    at_argmax = subgroup_metrics(df, CLASSES, ["sex"], n_resamples=0)
    # a threshold above every covid score: nothing is called covid, sensitivity 0 everywhere
    strict = subgroup_metrics(df, CLASSES, ["sex"], threshold=1.01, n_resamples=0)
    assert at_argmax.table["pos_sensitivity"].min() > 0.9
    assert (strict.table["pos_sensitivity"] == 0).all()


def test_json_rows_and_small_datasets():
    rng = np.random.default_rng(2)
    df = _predictions(rng, 50, miss_rate_for_f=0.2)
    report = subgroup_metrics(df, CLASSES, ["sex", "nope"], n_resamples=100)
    rows = report.to_json()
    assert {"column", "value", "n", "auc", "pos_sensitivity", "too_small", "ci"} <= set(rows[0])
    assert rows[0]["ci"]["auc"][0] <= rows[0]["auc"] <= rows[0]["ci"]["auc"][1]
    assert report.skipped == {"nope": "not a column of this dataset"}
    assert report.gap is None and "No sensitivity gap" in report.gap_sentence  # every group < 30 images
    assert all(r["too_small"] for r in rows)
    shown = report.display_table()
    assert shown.loc[0, "auc"].count("[") == 1


@pytest.mark.parametrize("column", ["age"])
def test_age_bands_come_in_order(column):
    rng = np.random.default_rng(3)
    df = _predictions(rng, 300, 0.0).assign(age=rng.integers(1, 99, 300))
    values = subgroup_metrics(df, CLASSES, [column], n_resamples=0).table["value"].tolist()
    assert values == ["0-19", "20-39", "40-59", "60-79", "80+"]


def test_no_gap_names_two_different_groups():
    rng = np.random.default_rng(2)
    df = _predictions(rng, 400, miss_rate_for_f=0.0)
    df["prob/covid"] = np.where(df["target"] == 1, 0.9, 0.1)  # every covid image found in every group
    df["prob/normal"] = 1 - df["prob/covid"]
    report = subgroup_metrics(df, CLASSES, ["sex"], n_resamples=0)
    assert report.gap["gap"] == 0
    assert report.gap["low"]["value"] != report.gap["high"]["value"]
    assert "No gap in sensitivity" in report.gap_sentence
