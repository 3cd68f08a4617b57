"""The tables of the Train and Compare pages: ETA, best (not last) metrics from a store filled
through its real API, the config fields that differ, CSV export, selection that follows its
runs, sweep expansion and the class-weight preview."""

from __future__ import annotations

import io
import time

import pandas as pd
import pytest

from core.errors import ConfigError
from core.runs import views
from core.runs.store import RunRecord, RunStatus, RunStore
from core.train.reporter import MetricRow

BASE = {
    "arch": "resnet18",
    "loss": "weighted_ce",
    "sampler": "none",
    "epochs": 5,
    "monitor": "auc",
    "device": "cpu",
}


@pytest.fixture
def store(workspace) -> RunStore:
    return RunStore(workspace=workspace)


def _record(**kw) -> RunRecord:
    defaults = dict(id="r1", name="run", status=RunStatus.RUNNING, config=dict(BASE))
    return RunRecord(**{**defaults, **kw})


def _epochs(store: RunStore, run_id: str, values: list[float], name: str = "auc", t0: float = 1000.0) -> None:
    rows = []
    for e, v in enumerate(values, start=1):
        rows += [
            MetricRow(e, e * 10, "val", name, v, t0 + 60 * e),
            MetricRow(e, e * 10, "val", "loss", 1.0 / e, t0 + 60 * e),
            MetricRow(e, e * 10, "val", "sensitivity/covid", v / 2, t0 + 60 * e),
            MetricRow(e, e * 10, "train", "loss", 1.2 / e, t0 + 60 * e),
        ]
    store.add_metrics(run_id, rows)


# -- formatting and ETA ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "seconds, text",
    [
        (None, ""),
        (float("nan"), ""),
        (4.4, "4 s"),
        (59.6, "1 min 00 s"),
        (200, "3 min 20 s"),
        (1500, "25 min"),
        (7500, "2 h 05 min"),
    ],
)
def test_durations_read_like_a_person_would_say_them(seconds, text):
    assert views.format_duration(seconds) == text


def test_eta_from_progress_rate_up_to_the_last_report():
    now = 10_000.0
    rec = _record(started=now - 100, heartbeat=now, progress=0.25)
    assert views.eta_seconds(rec, now) == pytest.approx(300.0)  # 100 s for a quarter: 300 s to go
    stale = _record(started=now - 100, heartbeat=now - 10, progress=0.25)
    assert views.eta_seconds(stale, now) == pytest.approx(90 * 3 - 10)  # rate measured at the report
    assert views.eta_seconds(_record(started=now - 5, heartbeat=now, progress=0.01), now) is None  # too early
    assert views.eta_seconds(_record(status=RunStatus.QUEUED, progress=0.0), now) is None
    assert views.eta_seconds(_record(status=RunStatus.DONE, started=now - 9, progress=1.0), now) is None


# -- best (not last) metrics -------------------------------------------------------------------


def test_best_metrics_come_from_the_best_epoch_not_the_last(store):
    running = store.create_run(BASE, name="running")
    store.claim_run(running.id, "host")
    _epochs(store, running.id, [0.60, 0.85, 0.70])
    rec = store.get_run(running.id)
    rows, last_id = store.metrics(rec.id)
    assert last_id == rows["id"].max()
    best = views.best_metrics(rec, rows)
    assert best["best_epoch"] == 2
    assert best["val_auc"] == pytest.approx(0.85)
    assert best["val_loss"] == pytest.approx(0.5)  # epoch 2's loss, not the last epoch's 1/3
    assert not any("/" in k for k in best)  # per-class values stay out of the summary

    by_loss = store.create_run({**BASE, "monitor": "loss"}, name="by loss")
    store.claim_run(by_loss.id, "host")
    _epochs(store, by_loss.id, [0.60, 0.85, 0.70])
    assert views.best_epoch(store.get_run(by_loss.id), store.metrics(by_loss.id)[0]) == 3  # lowest loss

    done = store.create_run(BASE, name="done")
    store.claim_run(done.id, "host")
    _epochs(store, done.id, [0.5, 0.9])
    store.finish(done.id, "done", best={"val_auc": 0.9, "val_loss": 0.5, "best_epoch": 2}, test={"auc": 0.88})
    done_best = views.best_metrics(store.get_run(done.id), store.metrics(done.id)[0])
    assert done_best == {"val_auc": 0.9, "val_loss": 0.5, "best_epoch": 2.0, "test_auc": 0.88}


def test_runs_table_shows_progress_epochs_and_the_best_so_far(store):
    rec = store.create_run(BASE, name="live")
    store.claim_run(rec.id, "host")
    store.update_progress(rec.id, 0.4, 2, 20, "epoch 2/5 batch 3/10")
    _epochs(store, rec.id, [0.7, 0.75])
    queued = store.create_run({**BASE, "epochs": 3}, name="waiting")
    runs = store.list_runs()
    best = views.live_best(store.metrics([r.id for r in runs], names=["auc"])[0], runs)
    table = views.runs_table(runs, best).set_index("run")
    assert table.loc["live", "epoch"] == "2/5"
    assert table.loc["live", "progress"] == pytest.approx(40.0)
    assert table.loc["live", "best"] == pytest.approx(0.75)
    assert table.loc["live", "note"] == "epoch 2/5 batch 3/10"
    assert table.loc["live", "ETA"] != ""
    assert table.loc["waiting", "epoch"] == "0/3" and pd.isna(table.loc["waiting", "best"])
    assert table.loc["waiting", "status"] == "queued" and queued.id in set(table["id"])


def test_the_note_says_why_a_run_stopped(store):
    broken = store.create_run(BASE, name="broken")
    store.claim_run(broken.id, "host")
    store.finish(broken.id, "failed", error="training process killed by SIGKILL\n--- last log lines ---\nx")
    early = store.create_run(BASE, name="early")
    store.request_cancel(early.id)
    stopped = store.create_run(BASE, name="stopped")
    store.claim_run(stopped.id, "host")
    store.request_cancel(stopped.id)
    done = store.create_run(BASE, name="done")
    store.claim_run(done.id, "host")
    store.update_progress(done.id, 0.99, 5, 50, "epoch 5/5 batch 9/10")
    store.finish(done.id, "done", best={"val_auc": 0.9, "best_epoch": 4})
    notes = views.runs_table(store.list_runs()).set_index("run")["note"]
    assert notes["broken"] == "training process killed by SIGKILL"
    assert notes["early"] == "cancelled before it started"
    assert notes["stopped"] == "cancelling..."
    assert notes["done"] == "best checkpoint: epoch 4"
    store.finish(stopped.id, "cancelled")
    assert "resume" in views.runs_table([store.get_run(stopped.id)]).loc[0, "note"]


# -- comparing runs -----------------------------------------------------------------------------


def test_only_the_fields_that_differ_are_compared():
    a = {**BASE, "name": "a", "lr": 1e-3, "loss_params": {"label_smoothing": 0.0}, "tags": ["x"]}
    b = {
        **BASE,
        "name": "b",
        "lr": 1e-4,
        "loss": "focal",
        "loss_params": {"gamma": 2.0, "alpha": "none"},
        "tags": ["x"],
    }
    fields = views.differing_fields([a, b])
    assert fields == ["loss", "loss_params.alpha", "loss_params.gamma", "loss_params.label_smoothing", "lr"]
    assert views.differing_fields([a]) == []
    assert views.differing_fields([a, dict(a, name="c")]) == []  # the name is the row label, not a difference


def test_selected_runs_table_has_differences_and_best_metrics(store):
    one = store.create_run({**BASE, "lr": 1e-3}, name="one")
    two = store.create_run({**BASE, "lr": 1e-4, "sampler": "oversample"}, name="two")
    for rec, values in ((one, [0.6, 0.8, 0.7]), (two, [0.9, 0.5])):
        store.claim_run(rec.id, "host")
        _epochs(store, rec.id, values)
    runs = [store.get_run(one.id), store.get_run(two.id)]
    rows = {r.id: store.metrics(r.id)[0] for r in runs}
    table = views.selected_runs_table(runs, rows)
    assert list(table.index) == ["one", "two"]
    assert {"lr", "sampler"} <= set(table.columns) and "arch" not in table.columns
    assert table.loc["one", "best epoch"] == 2 and table.loc["two", "best epoch"] == 1
    assert table.loc["one", "val auc"] == pytest.approx(0.8)
    single = views.selected_runs_table(runs[:1], rows)
    assert {"arch", "loss", "lr"} <= set(single.columns)  # one run: its key fields


def test_filters_by_status_tag_arch_and_strategy(store):
    store.create_run({**BASE, "tags": ["baseline"]})
    store.create_run({**BASE, "arch": "densenet121", "loss": "focal", "sampler": "oversample"})
    runs = store.list_runs()
    assert len(views.filter_runs(runs)) == 2
    assert [r.config["arch"] for r in views.filter_runs(runs, archs=["densenet121"])] == ["densenet121"]
    assert [r.tags for r in views.filter_runs(runs, tags=["baseline"])] == [["baseline"]]
    assert len(views.filter_runs(runs, strategies=["focal + oversample"])) == 1
    assert views.filter_runs(runs, statuses=["done"]) == []


def test_metrics_csv_holds_every_row_of_every_run(store):
    a = store.create_run(BASE, name="a")
    b = store.create_run(BASE, name="b")
    _epochs(store, a.id, [0.5, 0.6, 0.7])
    _epochs(store, b.id, [0.5])
    rows = {r: store.metrics(r)[0] for r in (a.id, b.id)}
    table = pd.read_csv(io.BytesIO(views.metrics_csv(rows, {a.id: "a", b.id: "b"})))
    assert list(table.columns) == [
        "run_id",
        "run",
        "split",
        "metric",
        "epoch",
        "step",
        "value",
        "time",
        "minutes",
    ]
    assert len(table) == sum(len(df) for df in rows.values())
    assert table.groupby("run").size().to_dict() == {"a": 12, "b": 4}
    assert table.loc[table["run"] == "a", "minutes"].max() == pytest.approx(2.0)


def test_run_starts_use_the_first_row_for_a_resumed_run():
    rec = _record(started=5000.0, created=900.0)
    rows = pd.DataFrame({"time": [1000.0, 1060.0]})
    assert views.run_starts([rec], {rec.id: rows}) == {rec.id: 900.0}
    assert views.run_starts([_record(started=950.0, created=940.0)], {"r1": rows}) == {"r1": 940.0}


# -- form helpers ---------------------------------------------------------------------------------


def test_selection_follows_its_runs_when_rows_move():
    before = ["c", "b", "a"]
    assert views.remap_selection(before, [1], ["d", "c", "b", "a"]) == [2]  # a new run on top
    assert views.remap_selection(before, [0, 2], ["c", "a"]) == [0, 1]  # b was deleted
    assert views.remap_selection(before, [1], ["c", "a"]) == []  # the selected run is gone
    assert views.remap_selection(before, [7], before) == []


def test_a_sweep_is_every_combination_checked_before_queueing(workspace):
    base = {"data": str(workspace), "epochs": 2, "name": "abl", "tags": ["t"]}
    configs = views.sweep_configs(
        base,
        ["resnet18", "resnet34"],
        ["weighted_ce", "focal"],
        ["none"],
        [0, 1],
        loss_params={"focal": {"gamma": 1.0}},
    )
    assert len(configs) == 8
    assert len({c.name for c in configs}) == 8
    assert {(c.arch, c.loss, c.seed) for c in configs} == {
        (a, loss, s) for a in ("resnet18", "resnet34") for loss in ("weighted_ce", "focal") for s in (0, 1)
    }
    assert all(c.loss_params == ({"gamma": 1.0} if c.loss == "focal" else {}) for c in configs)
    assert "abl-resnet34-focal-s1" in {c.name for c in configs}
    one = views.sweep_configs({**base, "name": "mine"}, ["resnet18"], ["ce"], ["oversample"], [3])
    assert [c.name for c in one] == ["mine"] and one[0].sampler == "oversample"
    with pytest.raises(ConfigError, match="lr"):
        views.sweep_configs({**base, "lr": -1}, ["resnet18"], ["ce"], ["none"], [0])
    with pytest.raises(ConfigError, match="at least one"):
        views.sweep_configs(base, [], ["ce"], ["none"], [0])


@pytest.mark.parametrize(
    "text, seeds", [("0", [0]), ("2, 0,1", [0, 1, 2]), ("0-3", [0, 1, 2, 3]), ("1;1", [1])]
)
def test_seeds_parse(text, seeds):
    assert views.parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["", "x", "3-1", "-1"])
def test_bad_seeds_name_the_problem(text):
    with pytest.raises(ConfigError, match="seeds"):
        views.parse_seeds(text)


def test_strategy_preview_shows_the_weights_and_sampling_training_will_use():
    table, errors = views.strategy_preview(
        ["normal", "covid", "pneumonia"],
        [600, 100, 300],
        {"weighted_ce": {}, "ce": {}, "bce": {}},
        {"none": {}, "oversample": {}},
    )
    assert errors and "bce" in errors[0] and "2 classes" in errors[0]  # three classes: bce cannot run
    weights = table["weight · weighted_ce"].tolist()
    assert weights == pytest.approx([1000 / (3 * 600), 1000 / (3 * 100), 1000 / (3 * 300)])
    assert table["weight · ce"].tolist() == [1.0, 1.0, 1.0]
    assert table["per epoch · oversample"].tolist() == pytest.approx([333.3, 333.3, 333.3], abs=0.1)
    assert "per epoch · none" not in table.columns


def test_eta_uses_real_clock_by_default():
    rec = _record(started=time.time() - 50, heartbeat=time.time(), progress=0.5)
    assert views.eta_seconds(rec) == pytest.approx(50, abs=2)
