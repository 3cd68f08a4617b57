"""The Compare page in AppTest on a store filled through its API: curves of a finished run
and of a running one, new rows read incrementally, the table of differences and best
metrics, ROC / PR / confusion matrices from the finished run's predictions, filters, and the
empty state's link to the Train page."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from tests.apptest import TIMEOUT, open_page
from tests.apptest import assert_clean as _ok

ROOT = Path(__file__).resolve().parents[2]
PAGE = str(ROOT / "pages" / "compare.py")
CLASSES = ("normal", "pneumonia")


@pytest.fixture
def store(workspace):
    from core.runs.store import RunStore

    return RunStore(workspace=workspace)


def _epochs(store, run_id: str, aucs: list[float], first: int = 1) -> None:
    from core.train.reporter import MetricRow

    rows = []
    for e, auc in enumerate(aucs, start=first):
        t = time.time() - 60 * (10 - e)
        for split, shift in (("train", 0.05), ("val", 0.0)):
            rows += [
                MetricRow(e, e * 20, split, "auc", auc + shift, t),
                MetricRow(e, e * 20, split, "loss", 1.0 / e + shift, t),
                MetricRow(e, e * 20, split, "sensitivity/pneumonia", auc - 0.1, t),
            ]
    store.add_metrics(run_id, rows)


def _finished(store, workspace: Path, name: str = "finished", aucs=(0.6, 0.9, 0.8), **config) -> str:
    from core.runs import run_dir

    rec = store.create_run(
        {"arch": "resnet18", "loss": "weighted_ce", "epochs": len(aucs), **config}, name=name
    )
    store.claim_run(rec.id, "host")
    _epochs(store, rec.id, list(aucs))
    best = int(np.argmax(aucs)) + 1
    store.finish(
        rec.id,
        "done",
        best={"val_auc": max(aucs), "val_loss": 1.0 / best, "best_epoch": best},
        test={"auc": 0.85},
    )
    rng = np.random.default_rng(0)
    for split in ("val", "test"):
        y = rng.integers(0, 2, 60)
        p = np.clip(0.5 + (y - 0.5) * 0.5 + rng.normal(0, 0.25, 60), 0.01, 0.99)
        df = pd.DataFrame(
            {"path": [f"{i}.png" for i in range(60)], "target": y, "pred": (p > 0.5).astype(int)}
        )
        df["true_class"] = [CLASSES[i] for i in y]
        df["pred_class"] = [CLASSES[i] for i in df["pred"]]
        df["prob/normal"], df["prob/pneumonia"] = 1 - p, p
        folder = run_dir(rec.id, workspace)
        folder.mkdir(parents=True, exist_ok=True)
        df.to_csv(folder / f"predictions_{split}.csv", index=False)
    return rec.id


def _running(store, name: str = "running", aucs=(0.55, 0.7)) -> str:
    rec = store.create_run(
        {"arch": "resnet34", "loss": "focal", "sampler": "oversample", "epochs": 10, "tags": ["new"]},
        name=name,
    )
    store.claim_run(rec.id, "host")  # status running, a fresh heartbeat
    _epochs(store, rec.id, list(aucs))
    store.update_progress(rec.id, 0.2, 2, 40, "epoch 3/10")
    return rec.id


def _page() -> AppTest:
    return open_page(PAGE)


def _array(value) -> list:
    """A plotly JSON array: a list, or a typed array ``{"dtype", "bdata"}``."""
    if isinstance(value, dict) and "bdata" in value:
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"])).tolist()
    return list(value)


def _charts(at: AppTest) -> dict[str, dict]:
    """Plotly figures by their element key (``cmp_curve_auc``, ``cmp_roc``, ...)."""
    out = {}
    for el in at.get("plotly_chart"):
        spec = json.loads(el.proto.spec)
        out[el.proto.id.rsplit("-", 1)[-1] if not el.key else el.key] = spec
    return out


def _curve(spec: dict, run: str, dash: str) -> dict:
    return next(
        t
        for t in spec["data"]
        if t.get("name") == run
        and t.get("line", {}).get("dash") == dash
        and t.get("mode", "").startswith("lines")
    )


def test_curves_of_a_finished_and_a_running_run(workspace, store):
    done = _finished(store, workspace)
    live = _running(store)
    at = _page()
    charts = _charts(at)
    assert {"cmp_curve_auc", "cmp_curve_loss", "cmp_roc", "cmp_pr", f"cmp_cm_{done}"} <= set(charts)
    auc = charts["cmp_curve_auc"]
    assert _array(_curve(auc, "finished", "solid")["y"]) == pytest.approx([0.6, 0.9, 0.8])
    assert _array(_curve(auc, "running", "solid")["x"]) == [1, 2]
    assert _array(_curve(auc, "running", "dot")["y"]) == pytest.approx([0.6, 0.75])  # train, dotted
    stars = {
        t["legendgroup"]: _array(t["x"]) for t in auc["data"] if t.get("marker", {}).get("symbol") == "star"
    }
    assert stars == {done: [2], live: [2]}  # the recorded best, and the best so far
    table = at.dataframe[1].value  # [0] is the runs picker
    assert list(table.index) == ["running", "finished"]
    assert {"arch", "loss", "sampler", "epochs"} <= set(table.columns)
    assert table.loc["finished", "val auc"] == pytest.approx(0.9)  # best, not last (0.8)
    assert table.loc["running", "val auc"] == pytest.approx(0.7)
    assert table.loc["finished", "test auc"] == pytest.approx(0.85)
    assert any("Refreshing every 2 s" in c.value for c in at.caption)
    assert any("No val predictions for running" in c.value for c in at.caption)


def test_new_rows_are_read_incrementally_into_the_session(workspace, store):
    _finished(store, workspace)
    live = _running(store)
    at = _page()
    cache = at.session_state["cmp_metric_rows"]
    first_last = cache[live]["last"]
    assert not cache[live]["final"] and len(cache[live]["df"]) == 12
    _epochs(store, live, [0.8], first=3)
    at.run()
    _ok(at)
    cache = at.session_state["cmp_metric_rows"]
    assert cache[live]["last"] > first_last and len(cache[live]["df"]) == 18
    assert _array(_curve(_charts(at)["cmp_curve_auc"], "running", "solid")["x"]) == [1, 2, 3]


def test_controls_change_the_figures(workspace, store):
    _finished(store, workspace)
    _running(store)
    at = _page()
    at.multiselect(key="cmp_metric_names").set_value(["sensitivity/pneumonia"])
    at.segmented_control(key="cmp_x").set_value("step")
    at.toggle(key="cmp_log_y").set_value(True).run()
    _ok(at)
    charts = _charts(at)
    assert "cmp_curve_sensitivity/pneumonia" in charts and "cmp_curve_auc" not in charts
    spec = charts["cmp_curve_sensitivity/pneumonia"]
    assert spec["layout"]["yaxis"]["type"] == "log"
    assert _array(_curve(spec, "finished", "solid")["x"]) == [20, 40, 60]
    at.segmented_control(key="cmp_eval_split").set_value("test").run()
    _ok(at)
    assert "AUC" in _charts(at)["cmp_roc"]["data"][-1]["name"]


def test_filters_narrow_the_table(workspace, store):
    _finished(store, workspace)
    _running(store)
    at = _page()
    assert len(at.dataframe[0].value) == 2
    at.multiselect(key="cmp_f_status").set_value(["done"]).run()
    _ok(at)
    assert at.dataframe[0].value["run"].tolist() == ["finished"]
    at.multiselect(key="cmp_f_status").set_value([])
    at.multiselect(key="cmp_f_tags").set_value(["new"]).run()
    assert at.dataframe[0].value["run"].tolist() == ["running"]
    at.multiselect(key="cmp_f_strategy").set_value(["weighted_ce"]).run()
    assert any("No run matches" in i.value for i in at.info)


def test_no_runs_points_to_the_train_page(workspace, tmp_path):
    from core.data import catalog

    at = _page()
    assert "No runs yet" in at.info[0].value
    # Through the app's navigation, the hint is a real link to the Train page.
    (tmp_path / "ds" / "train" / "a").mkdir(parents=True)
    catalog.register_dataset(tmp_path / "ds", name="ds")  # a dataset: the app writes no demo
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    app.run()
    app.switch_page("pages/compare.py").run()
    assert not app.exception, [e.value for e in app.exception]
    links = [el for el in app.get("page_link")]
    assert any(el.proto.label == "Train a model" for el in links)
