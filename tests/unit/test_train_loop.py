"""The one training loop: every strategy trains, seeds reproduce, resume continues,
checkpoints are safe, bad images are reported, the CLI speaks JSON."""
from __future__ import annotations

import json
import logging
import pickle

import numpy as np
import pytest
import torch

from core.cli import main
from core.config import RunConfig
from core.errors import ConfigError, DataError
from core.train.checkpoint import load_checkpoint, save_checkpoint
from core.train.loop import Trainer, fit
from core.train.losses import list_losses
from core.train.reporter import FolderReporter, read_metrics
from core.train.samplers import list_samplers
from tests.conftest import write_tiny_dataset

FAST = dict(arch="resnet18", pretrained="none", img_size=32, batch_size=16, epochs=1, device="cpu", lr=3e-3, augment="light")


@pytest.fixture(autouse=True)
def _one_thread():
    # Tests share 2 cores with others; one thread per test keeps timings predictable.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _fit(tmp_path, workspace, name="run", reporter=None, resume=False, **kw):
    cfg = RunConfig(data=str(kw.pop("data")), **{**FAST, **kw})
    run_dir = tmp_path / name
    return fit(cfg, run_dir, reporter or FolderReporter(run_dir), resume=resume, workspace=workspace), run_dir


@pytest.mark.parametrize("loss", list_losses())
def test_every_loss_trains_and_records_its_weights(tmp_path, workspace, tiny_dataset, loss):
    res, run_dir = _fit(tmp_path, workspace, data=tiny_dataset, loss=loss)
    assert res.status == "done"
    assert np.isfinite(res.test["loss"])
    info = json.loads((run_dir / "info.json").read_text())
    assert "class_weights" in info["loss_weights"]
    assert (run_dir / "checkpoints" / "best.pt").exists() and (run_dir / "predictions_test.csv").exists()


@pytest.mark.parametrize("sampler", list_samplers())
def test_every_sampler_trains(tmp_path, workspace, tiny_dataset, sampler):
    res, run_dir = _fit(tmp_path, workspace, data=tiny_dataset, loss="ce", sampler=sampler)
    assert res.status == "done"
    info = json.loads((run_dir / "info.json").read_text())
    assert info["sampler"]["strategy"] == sampler


def test_bce_needs_two_classes(tmp_path, workspace):
    data = write_tiny_dataset(tmp_path / "three", n_per_class=6, classes=("normal", "a", "b"))
    with pytest.raises(ConfigError, match="2"):
        _fit(tmp_path, workspace, data=data, loss="bce")


def test_the_model_learns_the_tiny_task(tmp_path, workspace, tiny_dataset):
    res, _ = _fit(tmp_path, workspace, data=tiny_dataset, loss="weighted_ce", epochs=4, img_size=48)
    assert res.best["val_auc"] >= 0.9


def test_same_seed_same_result_on_cpu(tmp_path, workspace, tiny_dataset):
    a, _ = _fit(tmp_path, workspace, "a", data=tiny_dataset, loss="ce", epochs=2, seed=3)
    b, _ = _fit(tmp_path, workspace, "b", data=tiny_dataset, loss="ce", epochs=2, seed=3)
    c, _ = _fit(tmp_path, workspace, "c", data=tiny_dataset, loss="ce", epochs=2, seed=4)
    assert a.test["loss"] == pytest.approx(b.test["loss"], abs=1e-6)
    assert a.test["loss"] != pytest.approx(c.test["loss"], abs=1e-6)


class StopAfter(FolderReporter):
    """Asks the loop to stop after ``n`` progress reports (a cancel mid-epoch)."""

    def __init__(self, run_dir, n):
        super().__init__(run_dir)
        self.n = n
        self.seen = 0

    def progress(self, fraction, epoch, step, message=""):
        self.seen += 1

    def should_stop(self):
        return self.seen >= self.n


def test_resumed_run_ends_where_an_uninterrupted_one_ends(tmp_path, workspace, tiny_dataset):
    kw = dict(data=tiny_dataset, loss="weighted_ce", epochs=2, seed=1, precision="fp32")
    full, _ = _fit(tmp_path, workspace, "full", **kw)
    run_dir = tmp_path / "cut"
    # Stop mid-way through the first epoch (after 2 of its 3 batches), then resume.
    cut, _ = _fit(tmp_path, workspace, "cut", reporter=StopAfter(run_dir, 2), **kw)
    assert cut.status == "cancelled"
    assert (run_dir / "checkpoints" / "last.pt").exists()
    resumed, _ = _fit(tmp_path, workspace, "cut", resume=True, **kw)
    assert resumed.status == "done"
    assert resumed.test["loss"] == pytest.approx(full.test["loss"], rel=1e-3, abs=1e-4)
    assert resumed.best["val_auc"] == pytest.approx(full.best["val_auc"], abs=1e-6)


def test_frozen_backbone_only_trains_the_head(tmp_path, workspace, tiny_dataset):
    cfg = RunConfig(data=str(tiny_dataset), loss="ce", freeze="backbone", **FAST)
    trainer = Trainer(cfg, tmp_path / "frozen", FolderReporter(tmp_path / "frozen"), workspace)
    trainer.setup()
    conv = trainer.model.conv1.weight.detach().clone()
    fc = trainer.model.fc.weight.detach().clone()
    trainer.train_one_epoch(0)
    assert torch.equal(conv, trainer.model.conv1.weight)
    assert not torch.equal(fc, trainer.model.fc.weight)


def test_pickled_model_checkpoint_is_refused_not_executed(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"model": Evil()}, f)
    with pytest.raises(DataError, match="refusing"):
        load_checkpoint(path)
    assert not marker.exists()
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pt")
    with pytest.raises(DataError, match="refusing") as err:
        load_checkpoint(tmp_path / "module.pt")
    assert "(torch.nn.modules.linear.Linear)" in str(err.value)  # names what the file holds
    assert "\x1b" not in str(err.value)  # no terminal colour codes from torch's message


def test_checkpoint_round_trip_is_atomic(tmp_path):
    save_checkpoint(tmp_path / "c.pt", {"model": {"w": torch.ones(2)}, "epoch": 3})
    assert load_checkpoint(tmp_path / "c.pt")["epoch"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temp files left behind


def test_a_corrupt_training_image_is_reported_not_fatal(tmp_path, workspace, tiny_dataset, caplog):
    bad = tiny_dataset / "train" / "opacity" / "zz_corrupt.png"
    good = (tiny_dataset / "train" / "opacity").glob("*.png").__next__().read_bytes()
    bad.write_bytes(good[: len(good) // 2])  # truncated PNG
    with caplog.at_level(logging.WARNING, logger="core.train.loop"):
        res, run_dir = _fit(tmp_path, workspace, data=tiny_dataset, loss="ce")
    assert res.status == "done"
    # the run itself says what it could not use, and why: in its info and its log
    info = json.loads((run_dir / "info.json").read_text())
    reasons = {f["path"]: f["reason"] for f in info["skipped_images"]}
    assert info["n_skipped_images"] == 1 and str(bad) in reasons and reasons[str(bad)]
    assert any(str(bad) in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    n_train = len(list((tiny_dataset / "train").rglob("*.png")))
    assert info["n_images"]["train"] == n_train - 1  # the others all used


def test_decode_failure_in_the_cache_is_reported(tmp_path, workspace):
    from core.data.cache import build_cache

    good = write_tiny_dataset(tmp_path / "d", n_per_class=2)
    paths = sorted(str(p) for p in good.rglob("*.png"))
    junk = tmp_path / "junk.png"
    junk.write_text("not an image")
    cache = build_cache(paths + [str(junk)], 32, workspace=workspace)
    assert cache.ok.sum() == len(paths)
    assert [f["path"] for f in cache.failures] == [str(junk)]


def test_metrics_rows_have_train_and_val_every_epoch(tmp_path, workspace, tiny_dataset):
    _, run_dir = _fit(tmp_path, workspace, data=tiny_dataset, loss="ce", epochs=2)
    rows = read_metrics(run_dir)
    for split in ("train", "val"):
        for name in ("loss", "auc", "balanced_accuracy", "sensitivity", "specificity", "f1", "pr_auc"):
            epochs = sorted({r.epoch for r in rows if r.split == split and r.name == name})
            assert epochs == [1, 2], (split, name)
    assert any(r.split == "test" and r.name == "auc" for r in rows)


def test_cli_train_json_and_evaluate(tmp_path, workspace, tiny_dataset, capsys):
    rc = main(["train", "--data", str(tiny_dataset), "--arch", "resnet18", "--loss", "weighted_ce", "--epochs", "1",
               "--img-size", "32", "--batch-size", "16", "--device", "cpu", "--pretrained", "none", "--json"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and out["status"] == "done"
    assert set(out) == {"run_id", "status", "best", "test"}
    assert "val_auc" in out["best"] and "auc" in out["test"]
    assert main(["evaluate", out["run_id"], "--split", "test", "--json"]) == 0
    ev = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("accuracy", "precision", "recall", "f1", "auc", "confusion_matrix", "per_class"):
        assert key in ev
    assert ev["auc"] == pytest.approx(out["test"]["auc"], abs=1e-6)
    runs = main(["runs", "--json"])
    assert runs == 0 and json.loads(capsys.readouterr().out)[0]["status"] == "done"


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--device", "cuda"], "CUDA is not available" if not torch.cuda.is_available() else None),
        (["--arch", "resnet9000"], "valid: resnet18"),
        (["--loss", "nope"], "valid: ce"),
        (["--img-size", "8"], "img_size"),
        # ImageNet is the default; not in the (empty) hub cache and no download here:
        ([], "--pretrained imagenet: ImageNet weights for resnet18 are not in the torch hub cache"),
        (["--pretrained", "/no/such.pt"], "/no/such.pt: no such weights file"),
    ],
)
def test_cli_train_bad_input_is_one_line_exit_2(tmp_path, workspace, tiny_dataset, capsys, monkeypatch, flags, needle):
    if needle is None:
        pytest.skip("this machine has CUDA")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    rc = main(["train", "--data", str(tiny_dataset), "--epochs", "1", "--img-size", "32", *flags])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err
    if "torch hub cache" in needle:  # says where to put the file
        assert str(tmp_path / "torch-home" / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in err
    assert main(["runs", "--json"]) == 0 and json.loads(capsys.readouterr().out) == []  # no run was made


def test_cli_train_background_queues_without_training(tmp_path, workspace, tiny_dataset, capsys, monkeypatch):
    import core.runs.worker as worker

    monkeypatch.setattr(worker, "ensure_worker", lambda *a, **k: True)
    rc = main(["train", "--data", str(tiny_dataset), "--epochs", "1", "--background", "--pretrained", "none", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["status"] == "queued"
    from core.runs.store import RunStore

    assert RunStore().get_run(out["run_id"]).config["data"] == str(tiny_dataset)
