"""Speed of trustworthy evaluation (issue 10, "Speed").

Times, in one process unless said otherwise:

- bootstrap intervals (every metric, per class and macro) of 10,000 predictions, 1,000
  resamples: images, and patients (RSNA-like: ~1.1 images per patient), 2 and 3 classes;
- the paired bootstrap of two runs on the same 10,000 images;
- the shortcut probe on a 30,000-row RSNA-like index (metadata and varied file properties),
  and on a copy where one class's files differ (it must be flagged);
- the report of a run on a demo-sized dataset (1,000 images; fabricated predictions of a
  stored run, the dataset's index cached as the app would have it), warm in this process
  and cold as ``python -m core report`` in a new one, and on the 30,000-image index.

    python bench/evaluate.py [--seed 0]

Targets: 1,000 resamples of 10,000 predictions < 2 s; the report < 5 s; the probe on 30,000
rows < 10 s. The machine may be shared: the load average is printed with the results.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGETS = {"bootstrap": 2.0, "report": 5.0, "probe": 10.0}


class Timer:
    def __init__(self) -> None:
        self.rows: list[tuple[str, float, float, str]] = []

    def time(self, name: str, fn: Callable[[], Any], kind: str = "") -> Any:
        wall, cpu = time.perf_counter(), _cpu()
        out = fn()
        self.rows.append((name, time.perf_counter() - wall, _cpu() - cpu, kind))
        return out

    def report(self) -> bool:
        width = max(len(r[0]) for r in self.rows)
        print(f"\n{'step':<{width}}  {'seconds':>8}  {'cpu s':>6}  target")
        met = True
        for name, seconds, cpu, kind in self.rows:
            target = TARGETS.get(kind)
            verdict = "" if target is None else f"< {target:g} s: {'ok' if seconds < target else 'MISSED'}"
            met &= target is None or seconds < target
            print(f"{name:<{width}}  {seconds:8.3f}  {cpu:6.3f}  {verdict}")
        print(f"\nall targets met: {'yes' if met else 'NO'}  ({_load()})")
        return met


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the cold CLI run)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _load() -> str:
    return f"cores: {os.cpu_count()}, load average: {', '.join(f'{x:.1f}' for x in os.getloadavg())}"


def _predictions(rng: np.random.Generator, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += 1.0
    return y, np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


def bench_bootstrap(t: Timer, seed: int) -> None:
    from core.evaluate.bootstrap import bootstrap_metrics
    from core.evaluate.compare import paired_bootstrap

    rng = np.random.default_rng(seed)
    patients = rng.integers(0, 9000, 10_000).astype(str)
    bootstrap_metrics(*_predictions(rng, 500, 2), ["a", "b"], n_resamples=10)  # imports and first calls
    for k in (2, 3):
        y, p = _predictions(rng, 10_000, k)
        names = [f"c{i}" for i in range(k)]
        r = t.time(
            f"bootstrap 1,000 x 10,000, {k} classes, images",
            lambda y=y, p=p, names=names: bootstrap_metrics(y, p, names, n_resamples=1000, seed=seed),
            "bootstrap",
        )
        t.time(
            f"bootstrap 1,000 x 10,000, {k} classes, patients",
            lambda y=y, p=p, names=names: bootstrap_metrics(
                y, p, names, patients, n_resamples=1000, seed=seed
            ),
            "bootstrap",
        )
        print(f"{k} classes: AUC {r.text('auc', 3)}, {len(r.estimates)} metrics with intervals")
    y, pa = _predictions(rng, 10_000, 2)
    pb = np.clip(pa + rng.normal(0, 0.05, pa.shape), 1e-6, None)
    pb /= pb.sum(axis=1, keepdims=True)
    c = t.time(
        "paired bootstrap, 2 runs x 10,000, 1,000 resamples",
        lambda: paired_bootstrap(y, pa, pb, ["a", "b"], "auc", patients, n_resamples=1000, seed=seed),
    )
    print(c.sentence)


def rsna_like(root: Path, n: int, seed: int, shortcut: bool = False) -> pd.DataFrame:
    """bench/explore.py's RSNA-like index with varied file properties (formats, sizes, bit
    depths drawn alike for every class; ``shortcut``: one class's files are JPEGs)."""
    from bench.explore import build_index

    rng = np.random.default_rng(seed + 1)
    index, _ = build_index(root, n, seed)
    fmt = rng.choice(["PNG", "DICOM", "JPEG"], n, p=[0.6, 0.3, 0.1])
    index["file_format"] = pd.Series(fmt, dtype="str")
    index["file_mode"] = pd.Series(np.where(fmt == "DICOM", "MONOCHROME2", "L"), dtype="str")
    index["file_bit_depth"] = pd.Series(np.where(fmt == "DICOM", 12, 8), dtype="Int64")
    side = rng.choice([1024, 2048, 2500], n, p=[0.7, 0.2, 0.1])
    index["file_width"] = pd.Series(side, dtype="Int64")
    index["file_height"] = pd.Series(side, dtype="Int64")
    if shortcut:
        opacity = (index["label"] == "Lung Opacity").to_numpy()
        index.loc[opacity, "file_format"] = "JPEG"
        index.loc[opacity, "file_bit_depth"] = 8
        index.loc[opacity, "file_mode"] = "L"
    return index


def bench_probe(t: Timer, tmp: Path, seed: int) -> None:
    from core.evaluate.probe import probe_index

    probe_index(rsna_like(tmp / "warm", 2000, seed))  # imports
    index = rsna_like(tmp / "rsna-like", 30_000, seed)
    r = t.time("shortcut probe, 30,000 rows", lambda: probe_index(index, seed=seed), "probe")
    print(r.summary)
    planted = rsna_like(tmp / "planted", 30_000, seed, shortcut=True)
    r = t.time(
        "shortcut probe, 30,000 rows, planted JPEG shortcut", lambda: probe_index(planted, seed=seed), "probe"
    )
    print(r.summary)
    if not r.flagged:
        print("ERROR: the planted shortcut was not flagged")


def fake_run(tmp: Path, n: int, seed: int) -> tuple[str, Path]:
    """A stored, finished run on a cached RSNA-like index of ``n`` images (no image files:
    the report reads predictions and the index, never pixels)."""
    from core.data.index import IndexCache, ScanReport
    from core.data.tasks import Task, apply_task
    from core.runs import run_dir
    from core.runs.store import RunStore
    from core.train.reporter import MetricRow

    root = tmp / f"data-{n}"
    root.mkdir(parents=True)
    index = rsna_like(root, n, seed)
    boxes = pd.DataFrame({c: pd.Series(dtype="float64") for c in ("x", "y", "width", "height")})
    boxes.insert(0, "path", pd.Series(dtype="str"))
    boxes["label"] = pd.Series(dtype="str")
    IndexCache().save(
        IndexCache.key(root, "auto", {}), ScanReport(str(root), "csv", {}, index, boxes, sources=[str(root)])
    )
    table = apply_task(index, Task())
    classes = list(table.attrs["classes"])
    store = RunStore()
    rec = store.create_run(
        {
            "data": str(root),
            "format": "auto",
            "task": {},
            "arch": "resnet50",
            "loss": "ce",
            "epochs": 10,
            "seed": seed,
            "monitor": "auc",
        },
        name=f"bench-{n}",
    )
    folder = run_dir(rec.id)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for split in ("val", "test"):
        part = table[table["split"] == split]
        y, p = _predictions(rng, len(part), len(classes))
        y = part["target"].to_numpy()
        logits = np.log(p)
        logits[np.arange(len(y)), y] += 1.0
        p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        df = pd.DataFrame({"path": part["path"].to_numpy(), "target": y, "pred": p.argmax(axis=1)})
        df["true_class"] = [classes[i] for i in y]
        df["pred_class"] = [classes[i] for i in df["pred"]]
        for k, c in enumerate(classes):
            df[f"prob/{c}"] = p[:, k]
        df.to_csv(folder / f"predictions_{split}.csv", index=False)
    rows = [
        MetricRow(e, e * 100, s, m, float(v), 0.0)
        for e in range(1, 11)
        for s in ("train", "val")
        for m, v in (("loss", 1.0 / e), ("auc", 0.6 + 0.03 * e))
    ]
    store.add_metrics(rec.id, rows)
    store.finish(rec.id, "done", {"val_auc": 0.9, "best_epoch": 10}, {})
    return rec.id, root


def bench_report(t: Timer, tmp: Path, seed: int) -> None:
    from core.evaluate.report import write_report

    for n in (1000, 30_000):
        run_id, _ = fake_run(tmp, n, seed)
        if n == 1000:
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            cmd = [sys.executable, "-m", "core", "report", run_id, "--out", str(tmp / "cold.html"), "--json"]
            t.time(
                "report, 1,000-image run, cold `python -m core report` (new process)",
                lambda cmd=cmd, env=env: subprocess.run(
                    cmd, env=env, cwd=ROOT, check=True, capture_output=True
                ),
            )
            write_report(run_id, tmp / "warmup.html")  # imports
        out = t.time(
            f"report, {n:,}-image run, warm (as the app's download button)",
            lambda run_id=run_id, n=n: write_report(run_id, tmp / f"report-{n}.html"),
            "report" if n == 1000 else "",
        )
        print(f"{n:,} images: {out['bytes'] / 1e6:.1f} MB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"start: {_load()}")
    with tempfile.TemporaryDirectory(prefix="chestlab-bench-evaluate-") as tmp:
        os.environ["CHESTLAB_WORKSPACE"] = str(Path(tmp) / "workspace")
        t = Timer()
        bench_bootstrap(t, args.seed)
        bench_probe(t, Path(tmp), args.seed)
        bench_report(t, Path(tmp), args.seed)
        return 0 if t.report() else 1


if __name__ == "__main__":
    raise SystemExit(main())
