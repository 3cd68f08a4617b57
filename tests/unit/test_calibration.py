"""Calibration: ECE is near 0 when predictions come true as often as they say and large when
they are over-confident; temperature scaling lowers val NLL and never moves the argmax."""

from __future__ import annotations

import numpy as np
import pytest

from core.evaluate.calibration import (
    apply_temperature,
    calibrate,
    calibration_metrics,
    fit_temperature,
    load_temperature,
    nll,
    reliability,
    save_temperature,
)


def _calibrated(rng, n=20000, k=3):
    """Probabilities drawn first, labels drawn from them: calibrated by construction."""
    p = rng.dirichlet(np.ones(k) * 0.7, n)
    y = (p.cumsum(axis=1) > rng.random(n)[:, None]).argmax(axis=1)
    return y, p


def _sharpen(p, power=4.0):
    q = p**power
    return q / q.sum(axis=1, keepdims=True)


def test_ece_is_near_zero_for_calibrated_scores_and_large_for_overconfident_ones():
    rng = np.random.default_rng(0)
    y, p = _calibrated(rng)
    classes = ["a", "b", "c"]
    good = calibration_metrics(y, p, classes)
    bad = calibration_metrics(y, _sharpen(p), classes)
    assert good["ece"] < 0.02 and all(good[f"ece/{c}"] < 0.02 for c in classes)
    assert bad["ece"] > 0.1
    assert bad["brier"] > good["brier"]


def test_brier_per_class_is_scikit_learns():
    from sklearn.metrics import brier_score_loss

    rng = np.random.default_rng(1)
    y, p = _calibrated(rng, 500)
    m = calibration_metrics(y, p, ["a", "b", "c"])
    for c, name in enumerate("abc"):
        assert m[f"brier/{name}"] == pytest.approx(brier_score_loss(y == c, p[:, c]))
    assert m["brier"] == pytest.approx(np.mean([m[f"brier/{n}"] for n in "abc"]))


def test_reliability_bins_count_every_image_once_per_curve():
    rng = np.random.default_rng(2)
    y, p = _calibrated(rng, 1000)
    table = reliability(y, p, ["a", "b", "c"])
    assert set(table["curve"]) == {"top label", "a", "b", "c"}
    assert (table.groupby("curve")["count"].sum() == 1000).all()
    filled = table[table["count"] > 0]
    assert ((filled["confidence"] >= filled["lower"]) & (filled["confidence"] <= filled["upper"])).all()


def test_temperature_scaling_lowers_val_nll_of_an_overconfident_model():
    rng = np.random.default_rng(3)
    y, p = _calibrated(rng, 3000)
    over = _sharpen(p, 3.0)
    t = fit_temperature(y, over)
    assert t > 1.5  # softens: close to the power that sharpened it
    after = apply_temperature(over, t)
    assert nll(y, after) < nll(y, over) - 0.05
    assert np.array_equal(after.argmax(axis=1), over.argmax(axis=1))
    fit = calibrate(y, over, ["a", "b", "c"])
    assert fit.nll_after < fit.nll_before and fit.ece_after < fit.ece_before


def test_temperature_one_leaves_probabilities_alone():
    rng = np.random.default_rng(4)
    _, p = _calibrated(rng, 100)
    assert np.allclose(
        apply_temperature(p, 1.0), np.clip(p, 1e-7, 1) / np.clip(p, 1e-7, 1).sum(1, keepdims=True)
    )


def test_temperature_is_stored_with_the_run(workspace):
    from core.runs import run_dir
    from core.runs.store import RunStore

    store = RunStore(workspace=workspace)
    rec = store.create_run({"arch": "resnet18"})
    run_dir(rec.id, workspace).mkdir(parents=True)
    rng = np.random.default_rng(5)
    y, p = _calibrated(rng, 500)
    fit = calibrate(y, _sharpen(p), ["a", "b", "c"])
    save_temperature(rec.id, fit, workspace)
    assert load_temperature(rec.id, workspace).temperature == pytest.approx(fit.temperature, rel=1e-5)
    assert store.get_run(rec.id).info["temperature"] == pytest.approx(fit.temperature)
    assert load_temperature("no-such-run", workspace) is None
