"""The demo dataset is learnable from the lesion alone (issue 4); slow, run in CI.

The issue's check, as a user types it: ResNet-18 from scratch at 128 px on CPU reaches val
macro ROC-AUC >= 0.9 (about 60 s here; the issue allows 5 minutes, measured, not asserted:
speed is the benches' job). The shared 224-px run (the CAM tests' model) is checked too.
"""
from __future__ import annotations

import json
import time

import pytest

pytestmark = pytest.mark.slow


def test_cli_trains_resnet18_from_scratch_at_128px_to_val_macro_auc_0_9(demo_root, tmp_path, monkeypatch, capsys):
    from core.cli import main

    monkeypatch.setenv("CHESTLAB_WORKSPACE", str(tmp_path / "workspace"))
    started = time.monotonic()
    rc = main(["train", "--data", str(demo_root), "--arch", "resnet18", "--loss", "weighted_ce", "--epochs", "8",
               "--img-size", "128", "--device", "cpu", "--pretrained", "none", "--json"])  # fmt: skip
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    print(f"\n128 px, 8 epochs: {time.monotonic() - started:.0f} s, best {out['best']}")
    assert rc == 0 and out["status"] == "done"
    assert out["best"]["val_auc"] >= 0.9, out["best"]
    assert out["test"]["auc"] >= 0.85, {k: v for k, v in out["test"].items() if "/" not in k}


def test_resnet18_from_scratch_at_224px_reaches_val_macro_auc_0_9(trained_demo_run):
    ws, run_id, result = trained_demo_run
    assert result["status"] == "done"
    assert result["best"]["val_auc"] >= 0.9, result["best"]
    assert result["test"]["auc"] >= 0.85, {k: v for k, v in result["test"].items() if "/" not in k}


def test_the_run_is_in_the_store_with_curves(trained_demo_run):
    from core.runs.store import RunStore

    ws, run_id, _ = trained_demo_run
    store = RunStore(workspace=ws)
    rec = store.get_run(run_id)
    assert rec.status == "done" and rec.progress == pytest.approx(1.0)
    metrics, _ = store.metrics([run_id], names=["auc"])
    assert sorted(metrics.loc[metrics["split"] == "val", "epoch"].unique().tolist()) == list(range(1, 9))
    assert rec.info["loss_weights"]["class_weights"][rec.info["classes"].index("covid")] > 1.0
