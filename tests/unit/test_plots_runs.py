"""Figures of runs: TensorBoard's debiased smoothing, the best-epoch marker, the x axes,
ROC / PR curves and confusion matrices from a predictions table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.plots import runs as figs


def _rows(run_id: str, values: dict[str, list[float]], t0: float = 1000.0) -> pd.DataFrame:
    """Metric rows as the store returns them: ``{"val/auc": [...], "train/loss": [...]}``."""
    out = []
    for key, series in values.items():
        split, name = key.split("/", 1)
        for e, v in enumerate(series, start=1):
            out.append(
                dict(
                    id=len(out) + 1,
                    run_id=run_id,
                    epoch=e,
                    step=e * 50,
                    split=split,
                    name=name,
                    value=v,
                    time=t0 + 120.0 * e,
                )
            )
    return pd.DataFrame(out)


def _curve_traces(fig, name: str | None = None) -> list:
    return [t for t in fig.data if t.mode in ("lines", "lines+markers") and (name is None or t.name == name)]


def _star(fig):
    stars = [t for t in fig.data if t.mode == "markers" and t.marker.symbol == "star"]
    assert len(stars) == 1
    return stars[0]


# -- smoothing -----------------------------------------------------------------------------------


def test_ema_is_debiased_exactly_as_tensorboard():
    w = 0.6
    values = [3.0, 1.0, 4.0, 1.0, 5.0]
    last, expected = 0.0, []
    for n, v in enumerate(values, start=1):
        last = w * last + (1 - w) * v
        expected.append(last / (1 - w**n))
    assert figs.ema(values, w) == pytest.approx(expected, rel=1e-12)
    assert figs.ema(values, w)[0] == pytest.approx(3.0)  # the first point is not pulled towards 0
    assert figs.ema([0.7] * 20, 0.95) == pytest.approx([0.7] * 20)  # a flat line stays flat
    assert figs.ema(values, 0.0).tolist() == values


def test_ema_passes_non_finite_values_through_without_averaging_them():
    out = figs.ema([1.0, float("nan"), 3.0], 0.5)
    assert np.isnan(out[1])
    assert out[2] == pytest.approx((0.5 * 0.5 * 1.0 + 0.5 * 3.0) / (1 - 0.25))
    with pytest.raises(ValueError):
        figs.ema([1.0], 1.0)


# -- curves ----------------------------------------------------------------------------------------


def test_star_marks_the_best_epoch_on_the_val_curve():
    rows = _rows("a", {"val/auc": [0.6, 0.9, 0.8, 0.7], "train/auc": [0.5, 0.7, 0.9, 0.95]})
    run = figs.CurveRun("a", "run a", "#0072B2", best_epoch=2)
    fig = figs.curves_figure(rows, "auc", [run])
    star = _star(fig)
    assert list(star.x) == [2] and list(star.y) == [0.9]
    lines = _curve_traces(fig)
    assert {t.line.dash for t in lines} == {"solid", "dot"}  # val solid, train dotted
    assert all(t.line.color == "#0072B2" for t in lines)  # one colour per run
    assert sum(t.showlegend is not False for t in lines) == 1  # one legend entry per run


def test_x_axis_step_and_wall_time_and_log_scale():
    rows = _rows("a", {"val/loss": [1.0, 0.5, 0.25]}, t0=1000.0)
    run = figs.CurveRun("a", "a", "#000000", best_epoch=3, start=1000.0)
    by_step = figs.curves_figure(rows, "loss", [run], x="step", log_y=True)
    assert list(_curve_traces(by_step)[0].x) == [50, 100, 150]
    assert by_step.layout.yaxis.type == "log"
    by_time = figs.curves_figure(rows, "loss", [run], x="time")
    assert list(_curve_traces(by_time)[0].x) == pytest.approx([2.0, 4.0, 6.0])  # minutes since the start
    assert list(_star(by_time).x) == pytest.approx([6.0])
    with pytest.raises(ValueError, match="x axis"):
        figs.curves_figure(rows, "loss", [run], x="hours")


def test_smoothing_keeps_the_raw_curve_faint_beside_the_smoothed_one():
    rows = _rows("a", {"val/auc": [0.2, 0.8, 0.4, 0.9]})
    fig = figs.curves_figure(rows, "auc", [figs.CurveRun("a", "a", "#000000")], splits=["val"], smoothing=0.5)
    raw, smooth = _curve_traces(fig)
    assert raw.opacity == figs.SMOOTHED_RAW_OPACITY and list(raw.y) == [0.2, 0.8, 0.4, 0.9]
    assert list(smooth.y) == pytest.approx(figs.ema([0.2, 0.8, 0.4, 0.9], 0.5).tolist())


def test_several_runs_get_their_own_colours_and_missing_metrics_say_so():
    rows = pd.concat([_rows("a", {"val/auc": [0.5, 0.6]}), _rows("b", {"val/auc": [0.7]})], ignore_index=True)
    colors = figs.run_colors(["a", "b"])
    runs = [figs.CurveRun(r, r, colors[r]) for r in ("a", "b")]
    fig = figs.curves_figure(rows, "auc", runs, splits=["val"])
    assert [t.line.color for t in _curve_traces(fig)] == [colors["a"], colors["b"]]
    assert colors["a"] != colors["b"]
    empty = figs.curves_figure(rows, "f1", runs)
    assert not empty.data and "No f1 values" in empty.layout.annotations[0].text


# -- predictions ------------------------------------------------------------------------------------


def _predictions(targets: list[int], probs: list[list[float]], classes: list[str]) -> pd.DataFrame:
    p = np.asarray(probs)
    df = pd.DataFrame(
        {"path": [f"{i}.png" for i in range(len(targets))], "target": targets, "pred": p.argmax(1)}
    )
    df["true_class"] = [classes[i] for i in targets]
    df["pred_class"] = [classes[i] for i in df["pred"]]
    for k, c in enumerate(classes):
        df[f"prob/{c}"] = p[:, k]
    return df


def test_roc_and_pr_from_a_predictions_table_match_sklearn():
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p1 = np.clip(0.3 * y + rng.random(200) * 0.7, 0, 1)
    pred = _predictions(y.tolist(), np.stack([1 - p1, p1], 1).tolist(), ["normal", "pneumonia"])
    fpr, tpr, auc = figs.roc_points(pred, "pneumonia")
    assert auc == pytest.approx(roc_auc_score(y, p1))
    assert fpr[0] == 0 and tpr[-1] == 1 and np.all(np.diff(fpr) >= 0)
    recall, precision, ap, prevalence = figs.pr_points(pred, "pneumonia")
    assert ap == pytest.approx(average_precision_score(y, p1)) and prevalence == pytest.approx(y.mean())
    run = figs.CurveRun("a", "run a", "#0072B2")
    roc = figs.roc_figure([(run, pred)], "pneumonia")
    assert f"AUC {auc:.3f}" in roc.data[-1].name
    assert "AP" in figs.pr_figure([(run, pred)], "pneumonia").data[-1].name


def test_multiclass_roc_is_one_vs_rest_for_the_chosen_class():
    classes = ["normal", "covid", "pneumonia"]
    targets = [0, 0, 1, 1, 2, 2]
    probs = [
        [0.8, 0.1, 0.1],
        [0.6, 0.3, 0.1],
        [0.1, 0.8, 0.1],
        [0.2, 0.7, 0.1],
        [0.1, 0.2, 0.7],
        [0.5, 0.1, 0.4],
    ]
    pred = _predictions(targets, probs, classes)
    assert figs.prediction_classes(pred) == classes
    assert figs.roc_points(pred, "covid")[2] == 1.0  # covid's column separates covid from the rest
    assert figs.roc_points(pred, "pneumonia")[2] == 1.0
    assert figs.roc_points(pred, "missing") is None
    only_normal = pred[pred["target"] == 0]
    assert figs.roc_points(only_normal, "covid") is None  # no positives: no curve
    assert not figs.roc_figure([(figs.CurveRun("a", "a", "#000"), only_normal)], "covid").data


def test_confusion_matrix_counts_rows_as_the_true_class():
    from sklearn.metrics import confusion_matrix

    classes = ["normal", "covid", "pneumonia"]
    targets = [0, 0, 1, 2, 2, 2]
    probs = [
        [0.9, 0.05, 0.05],
        [0.1, 0.8, 0.1],
        [0.1, 0.8, 0.1],
        [0.1, 0.1, 0.8],
        [0.6, 0.2, 0.2],
        [0.2, 0.1, 0.7],
    ]
    pred = _predictions(targets, probs, classes)
    cm = figs.confusion_counts(pred, 3)
    assert cm.tolist() == confusion_matrix(targets, pred["pred"], labels=[0, 1, 2]).tolist()
    fig = figs.confusion_figure(cm, classes, "run a")
    heat = fig.data[0]
    assert heat.z[2][2] == pytest.approx(2 / 3)  # pneumonia's sensitivity on the diagonal
    assert heat.text[2][2].startswith("2<br>67%")
    assert not figs.confusion_figure(np.zeros((2, 2)), ["a", "b"]).data


def test_batch_metrics_spread_over_their_epoch_on_the_epoch_axis():
    from core.plots.runs import epoch_positions

    # batch_loss logged three times per epoch (steps out of order in the table), two epochs
    epoch = np.array([1, 1, 1, 2, 2, 2])
    step = np.array([20, 10, 30, 50, 40, 60])
    assert np.allclose(epoch_positions(epoch, step), [2 / 3, 1 / 3, 1, 5 / 3, 4 / 3, 2])
    # epoch-level rows stay on whole epochs
    assert np.array_equal(epoch_positions(np.array([1, 2, 3]), np.array([22, 44, 66])), [1, 2, 3])
    assert epoch_positions(np.array([]), np.array([])).size == 0
    # an epoch repeated after a resume (same step) stays at its epoch
    assert np.array_equal(epoch_positions(np.array([1, 2, 2, 3]), np.array([22, 44, 44, 66])), [1, 2, 2, 3])
