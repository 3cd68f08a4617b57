"""The Train page in AppTest on a small generated dataset: the form queues a run (and a sweep
queues every combination), a bad config is one line next to the form, the class-weight
preview follows the strategy, and cancel / resume / delete act on the selected run. No
worker process is ever started: ``ensure_worker`` is replaced and the test checks the lock."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from tests.apptest import assert_clean as _ok
from tests.apptest import open_page

PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "train.py")
COUNTS = {"train": (12, 6), "val": (4, 4), "test": (4, 4)}  # (normal, pneumonia)


@pytest.fixture
def dataset(workspace, tmp_path) -> Path:
    """A tiny class-folder dataset (train/val/test x normal/pneumonia), registered."""
    from core.data import catalog

    root = tmp_path / "tiny"
    rng = np.random.default_rng(0)
    for split, counts in COUNTS.items():
        for cls, n in zip(("normal", "pneumonia"), counts, strict=True):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (48, 48), dtype=np.uint8)).save(folder / f"{i}.png")
    catalog.register_dataset(root, name="tiny")
    # A fixed device list: no GPU probe in tests.
    (workspace / "settings.json").write_text(json.dumps({"devices": ["cpu"]}))
    return root


@pytest.fixture
def worker_calls(monkeypatch, workspace) -> list:
    """Records ``ensure_worker`` calls instead of starting a worker; at the end, checks that
    no worker holds the workspace."""
    from core.runs import worker

    calls: list = []
    monkeypatch.setattr(worker, "ensure_worker", lambda ws=None: calls.append(ws) or False)
    yield calls
    assert not worker.worker_running(workspace)


@pytest.fixture
def store(workspace):
    from core.runs.store import RunStore

    return RunStore(workspace=workspace)


def _page() -> AppTest:
    return open_page(PAGE)


def _launch(at: AppTest, label: str = "Launch 1 run") -> AppTest:
    next(b for b in at.button if b.label == label).click().run()
    return at


def test_the_form_queues_a_run_with_the_chosen_arch_and_loss(dataset, worker_calls, store):
    at = _page()
    assert "No runs yet" in at.info[0].value
    at.selectbox(key="tr_arch").set_value("resnet34")
    at.selectbox(key="tr_loss").set_value("focal").run()
    at.number_input(key="tr_loss_focal_gamma").set_value(1.5)
    at.number_input(key="tr_epochs").set_value(3)
    at.number_input(key="tr_img_size").set_value(64)
    at.text_input(key="tr_tags").set_value("first, cpu")
    _launch(at)
    _ok(at)
    [rec] = store.list_runs()
    assert rec.status.value == "queued"
    c = rec.config
    assert (c["arch"], c["loss"], c["epochs"], c["img_size"]) == ("resnet34", "focal", 3, 64)
    assert c["loss_params"] == {"gamma": 1.5, "alpha": "none"}
    assert c["data"] == str(dataset) and c["pretrained"] == "imagenet"  # the default, cached or not
    assert rec.tags == ["first", "cpu"]
    assert worker_calls, "submitting must ask for a worker"
    assert any(rec.id in t.value for t in at.toast)
    table = at.dataframe[0].value
    assert table["id"].tolist() == [rec.id] and table["status"].tolist() == ["queued"]


def test_imagenet_weights_say_whether_they_are_there_and_where_they_go(dataset, worker_calls, store):
    import models

    status = models.pretrained_status("resnet18")
    at = _page()
    assert at.radio(key="tr_pretrained").value == "imagenet"  # from scratch only when chosen
    assert not at.exception
    if status.available:
        assert any(status.path in c.value for c in at.caption)
    else:
        assert any(status.path in w.value for w in at.warning)  # the exact file to put where
    _launch(at)
    assert store.list_runs()[0].config["pretrained"] == "imagenet"
    at.radio(key="tr_pretrained").set_value("none").run()
    assert any("starts random" in c.value for c in at.caption)
    _launch(at)
    assert store.list_runs()[0].config["pretrained"] == "none"


def test_a_saved_task_brings_its_dataset_and_classes(dataset, worker_calls, store):
    from core.data.tasks import Task, save_task

    task = Task(name="sick or not", merge={"pneumonia": "sick", "normal": "well"})
    save_task(task, {"path": str(dataset), "format": "auto", "options": {}})
    at = _page()
    assert at.radio(key="tr_kind").value == "task"  # a saved task comes first
    assert at.dataframe[0].value["class"].tolist() == ["sick", "well"]
    _launch(at)
    _ok(at)
    [rec] = store.list_runs()
    assert rec.config["task_name"] == "sick or not" and rec.config["task"]["merge"] == task.merge
    assert rec.config["data"] == str(dataset)


def test_a_sweep_queues_every_combination(dataset, worker_calls, store):
    at = _page()
    at.toggle(key="tr_sweep").set_value(True).run()
    at.multiselect(key="tr_archs").set_value(["resnet18", "resnet34"])
    at.multiselect(key="tr_losses").set_value(["weighted_ce", "focal"]).run()
    _ok(at)
    assert any("Will queue 4 run(s)" in c.value for c in at.caption)
    _launch(at, "Launch 4 runs")
    _ok(at)
    runs = store.list_runs()
    assert len(runs) == 4
    assert {(r.config["arch"], r.config["loss"]) for r in runs} == {
        (a, loss) for a in ("resnet18", "resnet34") for loss in ("weighted_ce", "focal")
    }
    assert len({r.name for r in runs}) == 4
    sweep_tags = {t for r in runs for t in r.tags if t.startswith("sweep-")}
    assert len(sweep_tags) == 1 and all(sweep_tags <= set(r.tags) for r in runs)


def test_a_bad_config_is_one_line_next_to_the_form_and_queues_nothing(dataset, worker_calls, store):
    at = _page()
    at.number_input(key="tr_epochs").set_value(2)
    at.number_input(key="tr_warmup_epochs").set_value(10.0)
    _launch(at)
    assert not at.exception
    assert len(at.error) == 1 and "warmup_epochs" in at.error[0].value
    assert "\n" not in at.error[0].value
    assert store.list_runs() == []


def test_the_preview_follows_the_strategy(dataset, worker_calls):
    at = _page()
    preview = at.dataframe[0].value
    normal, pneumonia = COUNTS["train"]
    assert preview["train images"].tolist() == [normal, pneumonia]
    n = normal + pneumonia
    assert preview["weight · weighted_ce"].tolist() == pytest.approx([n / (2 * normal), n / (2 * pneumonia)])
    at.selectbox(key="tr_loss").set_value("bce")
    at.selectbox(key="tr_sampler").set_value("oversample").run()
    _ok(at)
    preview = at.dataframe[0].value
    assert preview["weight · bce"].tolist() == pytest.approx([1.0, normal / pneumonia])  # pos_weight auto
    assert preview["per epoch · oversample"].tolist() == pytest.approx([n / 2, n / 2])


def test_cancel_resume_and_delete_act_on_the_selected_run(dataset, worker_calls, store):
    from core.runs.submit import submit_run

    rec = submit_run({"data": str(dataset), "epochs": 2, "device": "cpu"}, start_worker=False)
    at = _page()
    assert at.dataframe[0].value["id"].tolist() == [rec.id]  # the newest run is selected
    at.button(key="tr_cancel").click().run()
    _ok(at)
    assert store.get_run(rec.id).status.value == "cancelled"
    at.button(key="tr_resume").click().run()
    _ok(at)
    assert store.get_run(rec.id).status.value == "queued"
    at.button(key="tr_cancel").click().run()
    at.button(key="tr_delete").click().run()
    _ok(at)
    assert store.list_runs() == []
    assert "No runs yet" in at.info[0].value


def test_a_running_run_cannot_be_deleted_and_a_failed_one_shows_why(dataset, worker_calls, store):
    from core.runs.submit import submit_run

    failed = submit_run({"data": str(dataset), "device": "cpu", "name": "crashed"}, start_worker=False)
    store.claim_run(failed.id, "host")
    store.finish(
        failed.id,
        "failed",
        error="training process killed by SIGKILL (out of memory, or kill -9)\nlast lines",
    )
    running = submit_run({"data": str(dataset), "device": "cpu", "name": "busy"}, start_worker=False)
    store.claim_run(running.id, "host")
    at = _page()
    assert at.dataframe[0].value["run"].tolist() == ["busy", "crashed"]
    assert any("cancel it first" in w.value for w in at.warning)
    assert not [b for b in at.button if b.key == "tr_delete"]
    at.session_state["train_runs"] = {"selection": {"rows": [1]}}
    at.run()
    assert any("crashed failed" in e.value and "SIGKILL" in e.value for e in at.error)
    assert [b.key for b in at.button if b.key in ("tr_resume", "tr_delete")] == ["tr_resume", "tr_delete"]
