"""Bootstrap intervals: the metrics match scikit-learn's, a count weight is a repeated image,
the 95% interval covers a known AUC about 95% of the time, patients are resampled whole."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from core.evaluate.bootstrap import MetricEngine, Resampler, bootstrap_metrics, format_ci
from core.train.metrics import classification_metrics


def _predictions(rng, n, k, ties=False):
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += 1.0
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, (np.round(p, 2) if ties else p)


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("ties", [False, True])
def test_metrics_on_the_sample_equal_classification_metrics(k, ties):
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(k)
    y, p = _predictions(rng, 400, k, ties)
    classes = [f"c{i}" for i in range(k)]
    point = MetricEngine(y, p, classes).point()
    ref = classification_metrics(y, p, classes)
    for name in (
        "auc",
        "pr_auc",
        "sensitivity",
        "specificity",
        "accuracy",
        "balanced_accuracy",
        "f1",
        "precision",
        *(f"auc/{c}" for c in classes),
        *(f"sensitivity/{c}" for c in classes),
    ):
        assert point[name] == pytest.approx(ref[name], abs=1e-12), name
    for c in range(k):
        assert point[f"pr_auc/c{c}"] == pytest.approx(average_precision_score(y == c, p[:, c]), abs=1e-12)


def test_a_count_weight_is_the_image_repeated():
    rng = np.random.default_rng(0)
    y, p = _predictions(rng, 300, 3, ties=True)
    w = rng.integers(0, 4, 300)
    rows = np.repeat(np.arange(300), w)
    weighted = MetricEngine(y, p, ["a", "b", "c"]).compute(w.astype(float)[:, None])
    repeated = MetricEngine(y[rows], p[rows], ["a", "b", "c"]).point()
    for name, values in weighted.items():
        assert values[0] == pytest.approx(repeated[name], abs=1e-12, nan_ok=True), name


def test_image_resamples_keep_the_class_counts():
    y = np.array([0] * 70 + [1] * 30)
    counts = Resampler.build(y).counts(50, np.random.default_rng(0))
    assert counts.shape == (100, 50)
    assert np.all(counts[y == 0].sum(axis=0) == 70) and np.all(counts[y == 1].sum(axis=0) == 30)


def test_patients_are_resampled_whole():
    y = np.repeat([0, 1, 0, 1, 0], 3)
    groups = np.repeat(["p1", "p2", "p3", "p4", "p5"], 3)
    r = Resampler.build(y, groups)
    assert r.unit == "patients" and r.n_units == 5
    counts = r.counts(200, np.random.default_rng(1))
    # the three images of a patient are always drawn together
    assert np.all(counts.reshape(5, 3, 200).std(axis=1) == 0)


def test_blank_patient_ids_fall_back_to_images():
    r = Resampler.build(np.array([0, 1, 0, 1]), ["", None, " ", "nan"])
    assert r.unit == "images" and r.n_units == 4


def test_the_95_interval_covers_a_known_auc_in_90_to_99_percent_of_repetitions():
    # Binormal scores: negatives N(0, 1), positives N(mu, 1): AUC = Phi(mu / sqrt(2)).
    mu, n = 1.0, 100
    true_auc = norm.cdf(mu / math.sqrt(2))
    rng = np.random.default_rng(2026)
    hits = 0
    for rep in range(200):
        y = np.r_[np.zeros(n, int), np.ones(n, int)]
        s = np.r_[rng.normal(0, 1, n), rng.normal(mu, 1, n)]
        p1 = 1 / (1 + np.exp(-s))
        result = bootstrap_metrics(y, np.c_[1 - p1, p1], ["neg", "pos"], n_resamples=1000, seed=rep)
        lo, hi = result.ci["auc"]
        hits += lo <= true_auc <= hi
    assert 0.90 <= hits / 200 <= 0.99


def test_patient_intervals_are_wider_when_a_patients_images_agree():
    # Five copies of each patient's score: resampling images pretends to 5x the evidence.
    rng = np.random.default_rng(3)
    y1 = rng.integers(0, 2, 60)
    s1 = rng.normal(y1 * 0.8, 1)
    y, s = np.repeat(y1, 5), np.repeat(s1, 5)
    p = np.c_[1 - 1 / (1 + np.exp(-s)), 1 / (1 + np.exp(-s))]
    by_image = bootstrap_metrics(y, p, ["a", "b"], n_resamples=500)
    by_patient = bootstrap_metrics(y, p, ["a", "b"], np.repeat(np.arange(60), 5).astype(str), n_resamples=500)
    width = lambda r: r.ci["auc"][1] - r.ci["auc"][0]  # noqa: E731
    assert by_patient.unit == "patients" and by_image.unit == "images"
    assert width(by_patient) > 1.8 * width(by_image)


def test_table_and_json_and_text():
    rng = np.random.default_rng(4)
    y, p = _predictions(rng, 200, 3)
    r = bootstrap_metrics(y, p, ["normal", "pneumonia", "covid"], n_resamples=200)
    table = r.table()
    assert {"auc", "sensitivity/covid", "pr_auc/normal"} <= set(table["metric"])
    lo, hi = r.ci["auc"]
    assert lo <= r.estimates["auc"] <= hi
    assert r.ci_json()["auc"] == [lo, hi]
    assert r.text("auc") == f"{r.estimates['auc']:.2f} [{lo:.2f}-{hi:.2f}]"


def test_format_ci():
    assert format_ci(0.9134, 0.871, 0.9449) == "0.91 [0.87-0.94]"
    assert format_ci(float("nan"), 0.1, 0.2) == "n/a"
    assert format_ci(0.5, float("nan"), float("nan")) == "0.50"
