"""Shortcut probe: the demo (no shortcut) passes; a copy whose covid images are re-saved as
JPEG, or whose metadata names the label, is flagged with the column that carries it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from core.cli import main
from core.evaluate.probe import grouped_folds, probe_dataset, probe_index, split_columns

COVID_VS_REST = {"name": "covid-vs-rest", "merge": {"normal": "non-covid", "pneumonia": "non-covid"}}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from core.data.demo import write_demo

    root = tmp_path_factory.mktemp("probe") / "demo"
    write_demo(root, seed=0, n_patients=130, size=64)
    return root


def _copy(demo, tmp_path, name):
    dst = tmp_path / name
    shutil.copytree(demo, dst)
    return dst, pd.read_csv(dst / "manifest.csv", dtype=str, keep_default_na=False)


def _covid_as_jpeg(demo, tmp_path):
    """The classic COVID shortcut: one class's images came from elsewhere, as JPEG."""
    from PIL import Image

    from core.data.images import read_gray

    root, manifest = _copy(demo, tmp_path, "jpeg")
    renamed = {}
    for i, row in manifest[manifest["label"] == "covid"].iterrows():
        old = root / row["path"]
        new = old.with_suffix(".jpg")
        Image.fromarray(read_gray(old)).save(new, quality=90)
        old.unlink()
        renamed[row["path"]] = manifest.loc[i, "path"] = str(new.relative_to(root))
    manifest.to_csv(root / "manifest.csv", index=False)
    boxes = pd.read_csv(root / "boxes.csv", dtype=str)
    boxes["path"] = boxes["path"].map(lambda p: renamed.get(p, p))
    boxes.to_csv(root / "boxes.csv", index=False)
    return root


def test_the_demo_has_no_shortcut(demo, workspace):
    result = probe_dataset(demo, workspace=workspace)
    assert result.metadata.auc <= 0.65 and result.file_properties.auc <= 0.65
    assert not result.flagged and result.grouped_by_patient
    out = result.to_json()
    assert {"metadata_auc", "file_properties_auc", "top_features", "flagged"} <= set(out)
    assert {"file_format", "file_bit_depth", "file_bytes"} <= set(out["file_property_features"])
    assert {"age", "sex", "view"} <= set(out["metadata_features"])
    assert "PatientID" in out["excluded"] and "label" in out["excluded"]


def test_one_class_saved_as_jpeg_is_flagged(demo, tmp_path, workspace):
    root = _covid_as_jpeg(demo, tmp_path)
    binary = probe_dataset(root, task=COVID_VS_REST, workspace=workspace)
    assert binary.file_properties.auc >= 0.9 and binary.flagged
    assert binary.top_features[0].feature in ("file_format", "file_mode", "file_bytes", "TransferSyntax")
    assert "SHORTCUT SUSPECTED" in binary.summary
    # Three classes: the macro AUC dilutes one class's shortcut; the class itself is flagged.
    three = probe_dataset(root, workspace=workspace)
    assert three.flagged and three.file_properties.flagged_classes == ["covid"]


def test_a_metadata_column_that_encodes_the_label_is_flagged(demo, tmp_path, workspace):
    root, manifest = _copy(demo, tmp_path, "hospital")
    manifest["hospital"] = manifest["label"].map(
        {"normal": "St Mary", "pneumonia": "General", "covid": "Field"}
    )
    manifest.to_csv(root / "manifest.csv", index=False)
    result = probe_dataset(root, workspace=workspace)
    assert result.metadata.auc >= 0.9 and result.flagged
    assert result.top_features[0].feature == "hospital" and result.top_features[0].auc_alone > 0.9
    assert result.file_properties.auc <= 0.65


def test_cli_probe_json(demo, workspace, capsys):
    assert main(["probe", str(demo), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"metadata_auc", "file_properties_auc", "top_features", "flagged"} <= set(out)
    assert out["flagged"] is False


def test_folds_keep_patients_together_and_classes_balanced():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(300), rng.integers(1, 4, 300)).astype(str)
    y_patient = rng.choice(3, 300, p=[0.6, 0.3, 0.1])
    y = y_patient[groups.astype(int)]
    folds = grouped_folds(y, groups, 5, seed=1)
    assert (pd.DataFrame({"g": groups, "f": folds}).groupby("g")["f"].nunique() == 1).all()
    share = pd.crosstab(folds, y, normalize="columns")
    assert share.min().min() > 0.1  # every class in every fold, near a fifth


def test_label_like_ids_and_constant_columns_are_left_out():
    index = pd.DataFrame(
        {
            "path": [f"/x/{i}.png" for i in range(60)],
            "label": ["a", "b"] * 30,
            "split": "train",
            "patient_id": [str(i) for i in range(60)],
            "Finding": ["a", "b"] * 30,
            "StudyInstanceUID": [str(i) for i in range(60)],
            "site": ["s1", "s2", "s3"] * 20,
            "Modality": "CR",
            "file_width": [512] * 60,
        }
    )
    meta, files, excluded, _ = split_columns(index)
    assert meta == ["site"] and files == []
    assert set(excluded) >= {"Finding", "StudyInstanceUID", "Modality", "file_width", "label", "patient_id"}
    result = probe_index(index)
    assert result.file_properties.auc is None and "no file properties" in result.file_properties.note


def test_a_probe_that_cannot_run_says_not_checked_not_no_shortcut():
    from core.evaluate.probe import ProbeResult, ProbeSide

    side = ProbeSide("metadata", None, ["age"], note="too few patients in a class for cross-validation")
    result = ProbeResult(side, ProbeSide("file_properties", None, []), n_images=187, n_groups=112,
                         grouped_by_patient=True, classes=["a", "b"], n_folds=1)  # fmt: skip
    assert result.summary.startswith("not checked: too few patients")
    assert "no shortcut found" not in result.summary
