"""The Compare page's trustworthy evaluation in AppTest (issue 10): two finished runs that
differ only by seed, fabricated through the RunStore API on a small manifest dataset (sex,
age, patients), with predictions on val and test where run B is clearly better than run A.
The page shows intervals as ``0.91 [0.87-0.94]``, the A-vs-B sentence, the seed band, and
one run's operating point, calibration (a temperature fitted and stored), subgroups and
report. No worker process is started: the runs are written straight into the store."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from tests.apptest import assert_clean as _ok
from tests.apptest import open_page

ROOT = Path(__file__).resolve().parents[2]
PAGE = str(ROOT / "pages" / "compare.py")
CLASSES = ("normal", "pneumonia")
N = {"train": 20, "val": 160, "test": 160}
INTERVAL = re.compile(r"^\d\.\d\d \[\d\.\d\d-\d\.\d\d\]$")


@pytest.fixture
def dataset(tmp_path) -> tuple[Path, pd.DataFrame]:
    """A manifest CSV over tiny PNGs: two images per patient, sex and age columns."""
    from core.data.index import scan

    root = tmp_path / "ds"
    (root / "img").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for split, n in N.items():
        for i in range(n):
            name = f"img/{split}_{i:03d}.png"
            Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(root / name)
            patient = f"{split}-p{i // 2}"
            rows.append(
                {
                    "path": name,
                    "label": CLASSES[(i // 2) % 2],
                    "split": split,
                    "patient_id": patient,
                    "sex": "F" if (i // 2) % 4 < 2 else "M",
                    "age": 25 + (i * 7) % 60,
                }
            )
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root, scan(root, "csv").index


def _predictions(index: pd.DataFrame, split: str, noise: float, seed: int) -> pd.DataFrame:
    rows = index[index["split"] == split].reset_index(drop=True)
    y = (rows["label"] == CLASSES[1]).to_numpy().astype(int)
    rng = np.random.default_rng(seed)
    p = 1 / (1 + np.exp(-((y - 0.5) * 3 + rng.normal(0, noise, len(y)))))
    df = pd.DataFrame({"path": rows["path"], "target": y, "pred": (p >= 0.5).astype(int)})
    df["true_class"] = [CLASSES[i] for i in y]
    df["pred_class"] = [CLASSES[i] for i in df["pred"]]
    df["prob/normal"], df["prob/pneumonia"] = 1 - p, p
    return df


def _finished_run(store, workspace: Path, data: Path, index: pd.DataFrame, seed: int, noise: float) -> str:
    from core.runs import run_dir
    from core.train.reporter import MetricRow

    config = {
        "data": str(data),
        "format": "csv",
        "arch": "resnet18",
        "epochs": 3,
        "img_size": 64,
        "seed": seed,
    }
    rec = store.create_run(config, name=f"resnet18-s{seed}")
    store.claim_run(rec.id, "host")
    t = time.time()
    aucs = [0.6 + 0.05 * e + 0.02 * seed for e in range(3)]
    store.add_metrics(
        rec.id,
        [MetricRow(e + 1, 10 * (e + 1), s, "auc", a - (0.05 if s == "train" else 0), t)
         for e, a in enumerate(aucs) for s in ("train", "val")],
    )  # fmt: skip
    store.finish(rec.id, "done", best={"val_auc": max(aucs), "best_epoch": 3}, test={"auc": max(aucs)})
    folder = run_dir(rec.id, workspace)
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("val", "test"):
        _predictions(index, split, noise, seed + (split == "test")).to_csv(
            folder / f"predictions_{split}.csv", index=False
        )
    return rec.id


@pytest.fixture
def two_seeds(workspace, dataset):
    """Run A (seed 0, noisy) and run B (seed 1, sharp, newer): same config but the seed."""
    from core.runs.store import RunStore

    root, index = dataset
    store = RunStore(workspace=workspace)
    a = _finished_run(store, workspace, root, index, seed=0, noise=3.0)
    time.sleep(0.01)
    b = _finished_run(store, workspace, root, index, seed=1, noise=0.8)
    return a, b


def _page() -> AppTest:
    return open_page(PAGE)


def _open_tab(at: AppTest, name: str) -> None:
    at.session_state["cmp_ev_tab"] = next(t.label for t in at.tabs if t.label.endswith(name))
    at.run()
    _ok(at)


def test_intervals_the_a_vs_b_sentence_and_the_seed_band(two_seeds):
    a, b = two_seeds
    at = _page()
    runs = at.dataframe[1].value  # [0] is the runs picker
    assert all(INTERVAL.match(v) for v in runs["val auc (95% CI)"]), runs["val auc (95% CI)"].tolist()
    table = next(d.value for d in at.dataframe if "PR-AUC" in d.value.columns)
    assert all(INTERVAL.match(v) for v in table["AUC"]) and set(table.index) == {"resnet18-s0", "resnet18-s1"}
    assert any("on val: 160 images (80 patients)" in c.value for c in at.caption)  # patients resampled
    sentence = next(s.value for s in at.success if "AUC" in s.value)
    assert sentence.startswith("resnet18-s1's val AUC is higher than resnet18-s0's by"), sentence
    assert "160 images (80 patients)" in sentence
    # Swapping the runs says the opposite; a split or metric change recomputes.
    at.selectbox(key="cmp_ab_a").set_value(b)
    at.selectbox(key="cmp_ab_b").set_value(a).run()
    _ok(at)
    assert any("is lower than" in w.value for w in at.warning)
    # The two runs differ only by seed: one experiment, shown as a mean with its band.
    at.segmented_control(key="cmp_seed_mode").set_value("minmax").run()
    _ok(at)
    spec = json.loads(next(el for el in at.get("plotly_chart") if el.key == "cmp_curve_auc").proto.spec)
    assert any(t.get("fill") == "toself" for t in spec["data"])
    mean = next(t for t in spec["data"] if t.get("mode") == "lines+markers")
    assert mean["name"] == "resnet18 (2 seeds)"
    seeds = next(d.value for d in at.dataframe if "seeds" in d.value.columns)
    assert seeds.loc["resnet18 (2 seeds)", "runs"] == 2 and "±" in seeds.loc["resnet18 (2 seeds)", "val auc"]


def test_operating_point_calibration_subgroups_and_report(two_seeds, workspace):
    from core.evaluate.calibration import load_temperature

    a, b = two_seeds
    at = _page()
    assert at.selectbox(key="cmp_ev_run").value == b
    text = " ".join(m.value for m in at.markdown)
    assert "call pneumonia when P(pneumonia) ≥" in text and "reported on test (160 images)" in text
    assert {m.label for m in at.metric} >= {
        "sensitivity (test)",
        "specificity (test)",
        "PPV (test)",
        "NPV (test)",
    }
    at.segmented_control(key="cmp_ev_rule").set_value("youden").run()
    _ok(at)
    assert "Youden" in " ".join(m.value for m in at.markdown)

    _open_tab(at, "Calibration")
    assert {"ECE", "Brier", "NLL"} <= {m.label for m in at.metric}
    assert load_temperature(b, workspace) is None
    at.button(key="cmp_ev_fit").click().run()
    _ok(at)
    fit = load_temperature(b, workspace)
    assert fit is not None and fit.nll_after <= fit.nll_before
    at.toggle(key="cmp_ev_apply").set_value(True).run()
    _ok(at)
    assert any(f"T = {fit.temperature:.2f}" in c.value and "(applied above)" in c.value for c in at.caption)

    _open_tab(at, "Subgroups")
    assert at.multiselect(key=f"cmp_ev_cols_{b}").value == ["sex", "age"]
    table = next(d.value for d in at.dataframe if "group" in d.value.columns)
    assert set(table.loc[table["column"] == "sex", "group"]) == {"F", "M"}
    assert table["images"].sum() == 2 * N["test"]
    assert table.loc[table["images"] < 30, "note"].str.startswith("too small").all()
    assert any("sensitivity for pneumonia" in m.value for m in [*at.info, *at.warning])

    _open_tab(at, "Report")
    at.button(key="cmp_report_build").click().run()
    _ok(at)
    [download] = [el for el in at.get("download_button") if el.proto.label == "Download report (HTML)"]
    assert any("Built in" in c.value for c in at.caption)
