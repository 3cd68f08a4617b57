"""The run report is one self-contained HTML page with every section; ``evaluate --json``
adds intervals, the operating point, calibration and subgroups; the leakage gate of
``train`` refuses a leaky task unless --allow-leakage, and the run records it."""

from __future__ import annotations

import json
import re

import pytest

from core.cli import main
from tests.unit.test_eval_compare import make_dataset, make_run, split_tables


@pytest.fixture
def run(tmp_path, workspace):
    root = make_dataset(tmp_path / "data")
    return make_run(workspace, root, split_tables(root, workspace), "resnet18-demo", strength=1.5)


def test_report_is_self_contained_with_every_section(run, workspace, tmp_path):
    from core.evaluate.report import SECTIONS, write_report
    from core.runs import run_dir

    (run_dir(run, workspace) / "cam_scores_test.json").write_text(
        json.dumps(
            [
                {
                    "path": p,
                    "method": "gradcam",
                    "energy_in_box": 0.5,
                    "pointing_game": True,
                    "faithfulness": 0.2,
                    "seconds": 0.1,
                }
                for p in __import__("pandas").read_csv(run_dir(run, workspace) / "predictions_test.csv")[
                    "path"
                ][:5]
            ]
        )
    )
    out = write_report(run, tmp_path / "r.html", workspace=workspace, n_resamples=200)
    text = (tmp_path / "r.html").read_text()
    assert out["path"] == str((tmp_path / "r.html").resolve())
    assert not re.search(r"<script[^>]+src=", text), "scripts must be inlined"
    markup = re.sub(r"<script.*?</script>", "", text, flags=re.S)
    assert "http://" not in markup and "https://" not in markup and "<link" not in markup
    assert text.count("Plotly.newPlot") >= 6 and text.count("<script type='text/javascript'>") == 1
    for section in SECTIONS:
        assert f"<section id='{section}'>" in text
    for words in (
        "Key findings",
        "ROC-AUC on test",
        "Operating point",
        "chosen for sensitivity &gt;= 0.95 on val",
        "Reliability",
        "ECE",
        "Subgroups",
        "sex",
        "age",
        "Shortcut probe",
        "no shortcut found",
        "Leakage audit",
        "gradcam",
        "resnet18",
    ):
        assert words.lower() in text.lower(), words


def test_cli_report_and_evaluate_json(run, workspace, tmp_path, capsys):
    out = tmp_path / "cli.html"
    assert main(["report", run, "--out", str(out), "--bootstrap", "100", "--no-probe", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["path"] == str(out.resolve()) and out.stat().st_size > 1e6
    assert (
        main(
            [
                "evaluate",
                run,
                "--split",
                "test",
                "--bootstrap",
                "200",
                "--target-sensitivity",
                "0.9",
                "--subgroups",
                "sex,age",
                "--json",
            ]
        )
        == 0
    )
    ev = json.loads(capsys.readouterr().out)
    for key in ("accuracy", "precision", "recall", "f1", "auc", "confusion_matrix", "per_class"):
        assert key in ev
    lo, hi = ev["ci"]["auc"]
    assert lo <= ev["auc"] <= hi and ev["ci_method"]["unit"] == "patients"
    op = ev["operating_point"]
    assert {"threshold", "sensitivity", "specificity", "ppv", "npv", "chosen_on"} <= set(op)
    assert op["chosen_on"] == "val" and op["val"]["sensitivity"] >= 0.9 and op["positive_class"] == "covid"
    assert {"ece", "brier"} <= set(ev["calibration"])
    assert {s["column"] for s in ev["subgroups"]} == {"sex", "age"}
    assert {"column", "value", "n", "auc"} <= set(ev["subgroups"][0])


def test_evaluate_calibrate_fits_and_stores_a_temperature(run, workspace, capsys):
    from core.runs.store import RunStore

    assert main(["evaluate", run, "--bootstrap", "0", "--subgroups", "none", "--calibrate", "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    t = RunStore(workspace=workspace).get_run(run).info["temperature"]
    assert ev["calibration"]["temperature"] == pytest.approx(t) and ev["subgroups"] == []


def test_evaluate_bad_positive_class_is_one_line(run, workspace, capsys):
    assert main(["evaluate", run, "--positive", "martian", "--bootstrap", "0", "--json"]) == 2
    assert "valid: normal, covid" in capsys.readouterr().err


# ---------------------------------------------------------------- the leakage gate


def test_leakage_report_names_patients_and_duplicates(tmp_path, workspace):
    import shutil

    from core.evaluate.leakage import check_leakage

    root = make_dataset(tmp_path / "leaky", n_patients=30, leak=True)
    report = check_leakage({"data": str(root)}, workspace)
    assert report.leaks and report.patients_in_several_splits == 1
    assert "1 patient(s) have images in several splits" in report.summary and "train/test" in report.summary
    clean = make_dataset(tmp_path / "clean", n_patients=30)
    assert not check_leakage({"data": str(clean)}, workspace).leaks
    shutil.copy(clean / "img" / "p000_0.png", clean / "img" / "p003_0.png")  # p000 in train, p003 in val
    dup = check_leakage({"data": str(clean)}, workspace)
    assert dup.leaks and dup.duplicate_images_across_splits == 1 and dup.patients_in_several_splits == 0
    assert not check_leakage({"data": str(clean)}, workspace, images=False).leaks  # patients only


TRAIN = ["--arch", "resnet18", "--img-size", "32", "--epochs", "1", "--batch-size", "16", "--device", "cpu",
         "--pretrained", "none"]


def test_train_refuses_a_leaky_task_without_allow_leakage(tmp_path, workspace, capsys):
    from core.runs.store import RunStore

    root = make_dataset(tmp_path / "leaky", n_patients=30, leak=True)
    assert main(["train", "--data", str(root), *TRAIN, "--json"]) == 2
    err = capsys.readouterr().err
    assert "leakage: 1 patient(s)" in err and "--allow-leakage" in err and len(err.strip().splitlines()) == 1
    assert RunStore(workspace=workspace).list_runs() == []  # nothing was queued


@pytest.mark.slow
def test_train_with_allow_leakage_records_it(tmp_path, workspace, capsys):
    from core.runs.store import RunStore

    root = make_dataset(tmp_path / "leaky", n_patients=30, leak=True)
    assert main(["train", "--data", str(root), *TRAIN, "--allow-leakage", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rec = RunStore(workspace=workspace).get_run(out["run_id"])
    assert rec.config["allow_leakage"] is True
    assert rec.info["leakage"]["allowed"] and rec.info["leakage"]["patients_in_several_splits"] == 1
