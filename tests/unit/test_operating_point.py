"""Operating points: the threshold chosen on val keeps its promise on val, is reported on
test with PPV/NPV and a confusion matrix, one-vs-rest for several classes, BCE's logit."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from core.errors import ConfigError
from core.evaluate.operating_point import choose_threshold, confusion_at, default_positive, operating_point


def _scores(rng, n, prevalence=0.3, separation=1.5, ties=False):
    y = rng.random(n) < prevalence
    s = 1 / (1 + np.exp(-(rng.normal(0, 1, n) + separation * y)))
    return y, (np.round(s, 2) if ties else s)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("ties", [False, True])
def test_threshold_for_sensitivity_095_reaches_it_on_val(seed, ties):
    rng = np.random.default_rng(seed)
    y, s = _scores(rng, int(rng.integers(40, 400)), ties=ties)
    t = choose_threshold(y, s, "sensitivity", 0.95)
    c = confusion_at(y, s, t)
    assert c.sensitivity >= 0.95
    # the highest such threshold: one step up would miss the target
    higher = np.sort(np.unique(s[y]))
    above = higher[higher > t]
    if len(above):
        assert confusion_at(y, s, above[0]).sensitivity < 0.95


@pytest.mark.parametrize("seed", range(5))
def test_threshold_for_specificity_reaches_it_on_val(seed):
    rng = np.random.default_rng(100 + seed)
    y, s = _scores(rng, 300, ties=True)
    t = choose_threshold(y, s, "specificity", 0.9)
    assert confusion_at(y, s, t).specificity >= 0.9


def test_youden_maximises_sensitivity_plus_specificity():
    rng = np.random.default_rng(7)
    y, s = _scores(rng, 500)
    t = choose_threshold(y, s, "youden")
    called = s[None, :] >= np.unique(s)[:, None]  # every threshold at once
    best = ((called & y).sum(1) / y.sum() + (~called & ~y).sum(1) / (~y).sum()).max()
    c = confusion_at(y, s, t)
    assert c.sensitivity + c.specificity == pytest.approx(best)


def test_confusion_rates():
    y = np.array([1, 1, 1, 0, 0, 0, 0])
    s = np.array([0.9, 0.6, 0.2, 0.7, 0.3, 0.1, 0.05])
    c = confusion_at(y, s, 0.5)
    assert (c.tp, c.fn, c.fp, c.tn) == (2, 1, 1, 3)
    assert (c.sensitivity, c.specificity, c.ppv, c.npv) == (2 / 3, 3 / 4, 2 / 3, 3 / 4)
    assert c.matrix == [[3, 1], [1, 2]]


def _table(y, probs, classes):
    df = pd.DataFrame({"path": [f"i{i}" for i in range(len(y))], "target": y})
    for k, c in enumerate(classes):
        df[f"prob/{c}"] = probs[:, k]
    return df


def test_multiclass_is_one_vs_rest_chosen_on_val_reported_on_test():
    rng = np.random.default_rng(11)
    classes = ["normal", "covid", "pneumonia"]

    def split(n):
        y = rng.integers(0, 3, n)
        logits = rng.normal(size=(n, 3))
        logits[np.arange(n), y] += 1.5
        return _table(y, np.exp(logits) / np.exp(logits).sum(1, keepdims=True), classes)

    val, test = split(300), split(300)
    op = operating_point(val, test, classes, positive="pneumonia", target=0.9)
    assert op.positive_class == "pneumonia" and op.chosen_on == "val"
    assert op.val.sensitivity >= 0.9
    yt, st = test["target"].to_numpy() == 2, test["prob/pneumonia"].to_numpy()
    assert op.result == confusion_at(yt, st, op.threshold)
    j = op.to_json()
    assert {"threshold", "sensitivity", "specificity", "ppv", "npv", "chosen_on"} <= set(j)
    assert j["confusion_matrix"] == op.result.matrix and j["val"]["sensitivity"] >= 0.9
    assert op.threshold != 0.5 and "P(pneumonia) >=" in op.description
    assert default_positive(classes) == "covid"


def test_bce_run_threshold_is_also_given_on_the_logit():
    rng = np.random.default_rng(5)
    y, s = _scores(rng, 200)
    table = _table(y.astype(int), np.c_[1 - s, s], ["normal", "opacity"])
    op = operating_point(table, table, ["normal", "opacity"], single_logit=True)
    assert op.logit_threshold == pytest.approx(math.log(op.threshold / (1 - op.threshold)))


def test_no_positive_on_val_is_a_clear_error():
    table = _table(np.zeros(10, int), np.full((10, 2), 0.5), ["a", "b"])
    with pytest.raises(ConfigError, match="only one kind"):
        operating_point(table, table, ["a", "b"])
    with pytest.raises(ConfigError, match="valid: a, b"):
        operating_point(table, table, ["a", "b"], positive="c")
