"""Is B better than A? The paired bootstrap finds a real difference, finds none between a run
and a relabelled copy of itself, and refuses runs evaluated on different images. Runs that
differ only by seed are grouped into mean curves with a band.

Runs here are fabricated through the real RunStore API: a small CSV dataset of tiny PNGs
with patients and metadata, a stored config, and ``predictions_<split>.csv`` files as the
training loop writes them (``make_run``; ``test_report`` uses it too)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.cli import main
from core.errors import ConfigError
from core.evaluate.compare import compare_runs, group_by_seed, paired_bootstrap, seed_curves, seed_summary

CLASSES = ["normal", "covid"]


def make_dataset(root: Path, n_patients: int = 120, seed: int = 0, leak: bool = False) -> Path:
    """A CSV-manifest dataset: 2 images per patient, a third of patients covid, splits by
    patient (``leak``: patient p001's second image moved to test), age, sex, view."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    rows = []
    (root / "img").mkdir(parents=True, exist_ok=True)
    for i in range(n_patients):
        label = "covid" if i % 3 == 0 else "normal"
        split = ("train", "val", "test")[(i // 3) % 3]
        sex, age, view = rng.choice(["F", "M"]), int(rng.integers(20, 90)), rng.choice(["PA", "AP"])
        for j in range(2):
            path = f"img/p{i:03d}_{j}.png"
            Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(root / path)
            s = "test" if leak and i == 1 and j == 1 else split
            rows.append((path, label, s, f"p{i:03d}", age, sex, view))
    pd.DataFrame(rows, columns=["path", "label", "split", "patient_id", "age", "sex", "view"]).to_csv(
        root / "manifest.csv", index=False
    )
    return root


def split_tables(root: Path, workspace: Path) -> dict[str, pd.DataFrame]:
    """``path, target`` per split, as a run of the default task sees them."""
    from core.data.index import scan
    from core.data.tasks import Task, apply_task

    table = apply_task(scan(root, workspace=workspace).index, Task())
    assert list(table.attrs["classes"]) == CLASSES
    return {
        s: table.loc[table["split"] == s, ["path", "target"]].reset_index(drop=True) for s in ("val", "test")
    }


def predictions(table: pd.DataFrame, strength: float, seed: int) -> pd.DataFrame:
    """Scores that separate the classes by ``strength`` (0 = chance), as predictions_*.csv."""
    rng = np.random.default_rng(seed)
    logit = strength * (2 * table["target"].to_numpy() - 1) + rng.normal(0, 1, len(table))
    p1 = 1 / (1 + np.exp(-logit))
    df = table.assign(pred=(p1 >= 0.5).astype(int))
    df["true_class"] = [CLASSES[t] for t in df["target"]]
    df["pred_class"] = [CLASSES[t] for t in df["pred"]]
    df["prob/normal"], df["prob/covid"] = 1 - p1, p1
    return df


def make_run(
    workspace: Path,
    data: Path,
    tables: dict[str, pd.DataFrame],
    name: str,
    strength: float = 1.5,
    seed: int = 0,
    frames: dict[str, pd.DataFrame] | None = None,
    **config,
) -> str:
    from core.runs import run_dir
    from core.runs.store import RunStore
    from core.train.reporter import MetricRow

    store = RunStore(workspace=workspace)
    cfg = {
        "data": str(data),
        "format": "auto",
        "task": {},
        "arch": "resnet18",
        "loss": "ce",
        "lr": 0.001,
        "epochs": 3,
        "seed": seed,
        "name": name,
        **config,
    }
    rec = store.create_run(cfg, name=name)
    folder = run_dir(rec.id, workspace)
    folder.mkdir(parents=True, exist_ok=True)
    frames = frames or {s: predictions(t, strength, seed + k) for k, (s, t) in enumerate(tables.items())}
    for split, df in frames.items():
        df.to_csv(folder / f"predictions_{split}.csv", index=False)
    curve = [0.6 + 0.1 * e + 0.01 * seed for e in range(3)]
    store.add_metrics(
        rec.id, [MetricRow(e + 1, 10 * (e + 1), "val", "auc", v, 0.0) for e, v in enumerate(curve)]
    )
    store.finish(rec.id, "done", {"val_auc": curve[-1], "best_epoch": 3}, {})
    return rec.id


@pytest.fixture
def dataset(tmp_path, workspace):
    root = make_dataset(tmp_path / "data")
    return root, split_tables(root, workspace)


def test_paired_bootstrap_finds_a_real_difference():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    weak = 1 / (1 + np.exp(-(0.5 * (2 * y - 1) + rng.normal(0, 1, 400))))
    strong = 1 / (1 + np.exp(-(1.5 * (2 * y - 1) + rng.normal(0, 1, 400))))
    r = paired_bootstrap(
        y, np.c_[1 - weak, weak], np.c_[1 - strong, strong], CLASSES, "auc", names=("A", "B")
    )
    assert r.difference > 0.1 and r.ci[0] > 0 and r.p_value < 0.01 and r.significant
    assert r.sentence.startswith("B's val AUC is higher than A's by")
    back = paired_bootstrap(
        y, np.c_[1 - strong, strong], np.c_[1 - weak, weak], CLASSES, "auc", names=("A", "B")
    )
    assert back.ci[1] < 0 and "lower" in back.sentence
    assert back.to_json()["ci"] == [pytest.approx(-r.ci[1], abs=0.05), pytest.approx(-r.ci[0], abs=0.05)]


def test_a_run_and_a_relabelled_copy_of_itself_show_no_difference(dataset, workspace, capsys):
    root, tables = dataset
    a = make_run(workspace, root, tables, "resnet18-a", strength=1.0)
    frames = {s: pd.read_csv(Path(workspace) / "runs" / a / f"predictions_{s}.csv") for s in tables}
    b = make_run(workspace, root, tables, "renamed copy", frames=frames)
    assert main(["compare", a, b, "--split", "val", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"metric", "a", "b", "difference", "ci", "p_value", "n_images"} <= set(out)
    assert out["difference"] == 0 and out["ci"] == [0, 0] and out["p_value"] == 1.0
    assert out["n_images"] == len(tables["val"]) and out["unit"] == "patients"
    assert (
        "No difference in val AUC" in out["sentence"] and f"these {out['n_images']} images" in out["sentence"]
    )


def test_compare_two_runs_of_different_quality(dataset, workspace):
    root, tables = dataset
    a = make_run(workspace, root, tables, "weak", strength=0.2)
    b = make_run(workspace, root, tables, "strong", strength=3.0, seed=1)
    r = compare_runs(a, b, "test", "auc", workspace=workspace)
    assert (
        r.significant
        and r.difference > 0
        and r.sentence.startswith("strong's test AUC is higher than weak's")
    )
    per_class = compare_runs(a, b, "test", "sensitivity/covid", workspace=workspace, n_resamples=200)
    assert per_class.metric == "sensitivity/covid" and "for covid" in per_class.sentence


def test_runs_on_different_images_are_refused_naming_the_counts(dataset, workspace, capsys):
    root, tables = dataset
    a = make_run(workspace, root, tables, "all")
    fewer = {s: predictions(t.iloc[: len(t) - 5], 1.0, 0) for s, t in tables.items()}
    b = make_run(workspace, root, tables, "fewer", frames=fewer)
    n = len(tables["val"])
    assert main(["compare", a, b, "--split", "val", "--json"]) == 2
    err = capsys.readouterr().err
    assert f"({n} val images)" in err and f"({n - 5} val images)" in err and "different images" in err
    with pytest.raises(ConfigError, match="valid: auc"):
        compare_runs(a, a, "val", "kappa", workspace=workspace)


def test_runs_that_differ_only_by_seed_are_grouped(dataset, workspace):
    from core.runs.store import RunStore

    root, tables = dataset
    ids = [make_run(workspace, root, tables, f"base-seed{s}", seed=s) for s in range(3)]
    other = make_run(workspace, root, tables, "other", lr=0.01)
    store = RunStore(workspace=workspace)
    records = store.list_runs()
    groups = group_by_seed(records)
    assert sorted(map(len, (g.run_ids for g in groups))) == [1, 3]
    seeds = next(g for g in groups if len(g.run_ids) == 3)
    assert set(seeds.run_ids) == set(ids) and sorted(seeds.seeds) == [0, 1, 2] and seeds.name == "base"
    assert other in next(g for g in groups if len(g.run_ids) == 1).run_ids
    metrics, _ = store.metrics([r.id for r in records])
    curves = seed_curves(metrics, [seeds], "auc", "val", band="minmax")
    assert curves["epoch"].tolist() == [1, 2, 3] and (curves["n"] == 3).all()
    assert curves["mean"].tolist() == pytest.approx([0.61, 0.71, 0.81])
    assert curves["lo"].tolist() == pytest.approx([0.60, 0.70, 0.80]) and curves[
        "hi"
    ].tolist() == pytest.approx([0.62, 0.72, 0.82])
    sd = seed_curves(metrics, [seeds], band="sd")
    assert sd["hi"].iloc[0] == pytest.approx(0.61 + 0.01)
    summary = seed_summary(records, [seeds], ["val_auc"])
    assert summary.loc[0, "n_runs"] == 3 and summary.loc[0, "text"] == "0.810 ± 0.010"
