"""The Train page's gates in AppTest: a task whose val split is a byte copy of its train split
shows what leaks and queues nothing until "Train anyway" is ticked (then the run is queued
with allow_leakage and records what leaked); a clean task launches without the question.
The launcher line: a Ray head that does not answer is a warning, never an exception; a
reachable one shows its nodes, free CPUs and GPUs, and the form offers its GPUs. No worker
process is started (``ensure_worker`` is replaced)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from tests.apptest import TIMEOUT
from tests.conftest import free_port  # noqa: E402

PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "train.py")


def _write(root: Path, split: str, rng: np.random.Generator, n: int = 6) -> None:
    for cls in ("normal", "pneumonia"):
        folder = root / split / cls
        folder.mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(folder / f"{split}{i}.png")


@pytest.fixture
def worker_calls(monkeypatch, workspace) -> list:
    from core.runs import worker

    calls: list = []
    monkeypatch.setattr(worker, "ensure_worker", lambda ws=None: calls.append(ws) or False)
    (workspace / "settings.json").write_text(json.dumps({"devices": ["cpu"]}))
    yield calls
    assert not worker.worker_running(workspace)


@pytest.fixture
def store(workspace):
    from core.runs.store import RunStore

    return RunStore(workspace=workspace)


def _register(root: Path) -> None:
    from core.data import catalog

    catalog.register_dataset(root, name=root.name)


def _page() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _launch(at: AppTest) -> AppTest:
    next(b for b in at.button if b.label == "Launch 1 run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_a_leaking_task_is_blocked_until_confirmed(tmp_path, worker_calls, store):
    root = tmp_path / "copied"
    rng = np.random.default_rng(0)
    _write(root, "train", rng)
    shutil.copytree(root / "train", root / "val")  # every val image is a train image, byte for byte
    _write(root, "test", rng, n=3)
    _register(root)
    at = _page()
    [warning] = [w.value for w in at.warning if "leaks" in w.value]
    assert "12 identical image pair(s) are in different splits" in warning and "train/val" in warning
    checkbox = at.checkbox(key="tr_allow_leakage")
    assert checkbox.label.startswith("Train anyway") and not checkbox.value
    at.number_input(key="tr_epochs").set_value(1)
    _launch(at)
    assert store.list_runs() == []
    assert any("Not launched" in e.value and "identical image" in e.value for e in at.error)
    at.checkbox(key="tr_allow_leakage").check()
    _launch(at)
    assert not at.error, [e.value for e in at.error]
    [rec] = store.list_runs()
    assert rec.config["allow_leakage"] is True
    leak = rec.info["leakage"]
    assert leak["allowed"] and leak["duplicate_images_across_splits"] == 12


def test_a_clean_task_launches_without_the_question(tmp_path, worker_calls, store):
    root = tmp_path / "clean"
    rng = np.random.default_rng(1)
    for split in ("train", "val", "test"):
        _write(root, split, rng, n=4)
    _register(root)
    at = _page()
    assert not [w for w in at.warning if "leaks" in w.value]
    assert any("Leakage: no patient or identical image is shared" in c.value for c in at.caption)
    assert not [c for c in at.checkbox if c.key == "tr_allow_leakage"]
    _launch(at)
    [rec] = store.list_runs()
    assert rec.config["allow_leakage"] is False and "leakage" not in rec.info


def test_a_ray_head_that_does_not_answer_is_a_warning(tmp_path, worker_calls, workspace):
    root = tmp_path / "clean"
    rng = np.random.default_rng(2)
    for split in ("train", "val", "test"):
        _write(root, split, rng, n=2)
    _register(root)
    address = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    (workspace / "settings.json").write_text(json.dumps({"launcher": "ray", "ray_address": address}))
    at = _page()
    assert not at.error, [e.value for e in at.error]
    [warning] = [w.value for w in at.warning if "Ray cluster" in w.value]
    assert address in warning and "unreachable" in warning
    options = at.selectbox(key="tr_device").options  # labels: "auto: ...", "cpu: ..."
    assert [o.split(":")[0] for o in options] == ["auto", "cpu"]


def test_a_ray_cluster_shows_its_nodes_and_offers_its_gpus(tmp_path, worker_calls, workspace, monkeypatch):
    from core.runs import cluster, worker
    from core.runs.launcher import DeviceInfo

    root = tmp_path / "clean"
    rng = np.random.default_rng(3)
    for split in ("train", "val", "test"):
        _write(root, split, rng, n=2)
    _register(root)
    (workspace / "settings.json").write_text(
        json.dumps({"launcher": "ray", "ray_address": "http://head:8265"})
    )
    status = {
        "launcher": "ray",
        "address": "http://head:8265",
        "reachable": True,
        "error": "",
        "nodes": [
            {"host": "head", "alive": True, "head": True, "cpus": 8.0, "gpus": 0.0},
            {"host": "gpu-1", "alive": True, "head": False, "cpus": 16.0, "gpus": 2.0},
        ],
        "cpus": {"total": 24.0, "free": 20.0},
        "gpus": {"total": 2.0, "free": 1.0},
        "running": [{"run_id": "r1", "name": "x", "status": "running", "device": "cuda", "job": "j"}],
    }
    monkeypatch.setattr(cluster, "cluster_status", lambda ws=None: status)
    monkeypatch.setattr(
        worker,
        "list_devices",
        lambda ws=None: [
            DeviceInfo("cpu", "cpu", "CPU on the Ray cluster (20 of 24 free, 2 nodes)"),
            DeviceInfo("cuda", "cuda", "GPU on the Ray cluster (1 of 2 free)"),
        ],
    )
    at = _page()
    assert not at.error, [e.value for e in at.error]
    line = next(c.value for c in at.caption if "Launcher: Ray jobs" in c.value)
    assert "2 node(s) alive" in line and "CPUs 20 of 24 free" in line and "GPUs 1 of 2 free" in line
    options = at.selectbox(key="tr_device").options
    assert [o.split(":")[0] for o in options] == ["auto", "cpu", "cuda"]
    assert "GPU on the Ray cluster (1 of 2 free)" in options[2]
