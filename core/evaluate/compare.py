"""Is run B better than run A? And what do runs that differ only by seed agree on?

**Paired bootstrap.** Two runs evaluated on the same images are compared on the same
resamples (patients when known, stratified by class): each resample gives both runs' metric
and their difference ``B - A``. The interval is the percentile interval of the differences;
the two-sided p-value is twice the smaller share of differences on either side of zero
(``(1 + #{d <= 0}) / (n + 1)`` and ``(1 + #{d >= 0}) / (n + 1)``), capped at 1: the smallest
level at which the percentile interval would exclude zero. It agrees with the interval by
construction (p < 0.05 exactly when the 95% interval leaves out zero, up to the +1), is
approximate like every bootstrap test, and cannot go below ``2 / (n + 1)`` (0.002 for 1,000
resamples). Pairing removes the variation both runs share (which images are hard), so it
finds differences an unpaired comparison of two intervals would miss.

**Seeds.** Runs whose configs differ only in ``SEED_FIELDS`` (seed, name, tags, device,
allow_leakage) are one experiment repeated: their curves become a mean with a band (min-max
or +-1 sd) and their best metrics a mean +- sd.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from core.errors import ConfigError
from core.evaluate.bootstrap import (
    DEFAULT_LEVEL,
    DEFAULT_RESAMPLES,
    MetricEngine,
    Resampler,
    percentile_interval,
    resample_metrics,
)

SEED_FIELDS = ("seed", "name", "tags", "device", "allow_leakage")
METRIC_NAMES = {
    "auc": "AUC",
    "pr_auc": "PR-AUC",
    "sensitivity": "sensitivity",
    "specificity": "specificity",
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced accuracy",
    "f1": "F1",
    "precision": "precision",
}


# ---------------------------------------------------------------- paired bootstrap


@dataclass
class Comparison:
    metric: str
    split: str
    name_a: str
    name_b: str
    a: float
    b: float
    difference: float  # b - a
    ci: tuple[float, float]
    p_value: float
    n_images: int
    n_resamples: int
    unit: str = "images"
    n_units: int = 0
    level: float = DEFAULT_LEVEL
    run_a: str = ""
    run_b: str = ""

    @property
    def significant(self) -> bool:
        lo, hi = self.ci
        return bool(lo > 0 or hi < 0)

    @property
    def sentence(self) -> str:
        """The answer in words, e.g. ``B's val AUC is higher by 0.03 [0.01, 0.05]``."""
        label = f"{self.split} {METRIC_NAMES.get(self.metric.split('/')[0], self.metric)}"
        if "/" in self.metric:
            label += f" for {self.metric.split('/', 1)[1]}"
        images = f"{self.n_images} images" + (
            f" ({self.n_units} patients)" if self.unit == "patients" else ""
        )
        lo, hi = self.ci
        n = _digits(self.difference, lo, hi)
        if self.significant:
            word = "higher" if self.difference > 0 else "lower"
            a, b = (lo, hi) if self.difference > 0 else (-hi, -lo)
            return (
                f"{self.name_b}'s {label} is {word} than {self.name_a}'s by {abs(self.difference):.{n}f} "
                f"[{a:.{n}f}, {b:.{n}f}] ({_p_text(self.p_value, self.n_resamples)}, {images})"
            )
        return (
            f"No difference in {label} between {self.name_a} and {self.name_b} can be shown on these "
            f"{images}: {self.name_b} - {self.name_a} = {self.difference:+.{n}f} [{lo:+.{n}f}, {hi:+.{n}f}] "
            f"({_p_text(self.p_value, self.n_resamples)})"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "a": _num(self.a),
            "b": _num(self.b),
            "difference": _num(self.difference),
            "ci": [_num(self.ci[0]), _num(self.ci[1])],
            "p_value": _num(self.p_value),
            "n_images": self.n_images,
            "split": self.split,
            "run_a": self.run_a,
            "run_b": self.run_b,
            "significant": self.significant,
            "n_resamples": self.n_resamples,
            "unit": self.unit,
            "n_units": self.n_units,
            "level": self.level,
            "sentence": self.sentence,
        }


def _num(x: float) -> float | None:
    return None if x != x else float(x)


def _digits(*values: float) -> int:
    """Two decimals, more when the interval's ends would otherwise both round to zero."""
    top = max((abs(v) for v in values if v == v), default=0.0)
    return 2 if top == 0 or top >= 0.01 else min(5, 1 - math.floor(math.log10(top)))


def _p_text(p: float, n: int) -> str:
    floor = 2 / (n + 1)
    return f"p < {floor:.3f}" if p <= floor else f"p = {p:.3f}"


def paired_p_value(differences: np.ndarray) -> float:
    d = np.asarray(differences, dtype=np.float64)
    d = d[~np.isnan(d)]
    if len(d) == 0:
        return math.nan
    n = len(d)
    below = (1 + int((d <= 0).sum())) / (n + 1)
    above = (1 + int((d >= 0).sum())) / (n + 1)
    return float(min(1.0, 2 * min(below, above)))


def paired_bootstrap(
    y_true: np.ndarray,
    probs_a: np.ndarray,
    probs_b: np.ndarray,
    classes: Sequence[str],
    metric: str = "auc",
    groups: Sequence[Any] | np.ndarray | None = None,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
    names: tuple[str, str] = ("A", "B"),
    split: str = "val",
) -> Comparison:
    """Compare two sets of predictions of the same images (rows aligned, same labels)."""
    y = np.asarray(y_true, dtype=np.int64)
    ea, eb = MetricEngine(y, probs_a, classes), MetricEngine(y, probs_b, classes)
    if metric not in ea.names:
        raise ConfigError(f"metric {metric!r} unknown; valid: {', '.join(ea.names)}")
    resampler = Resampler.build(y, groups)
    sa, sb = resample_metrics([ea, eb], resampler, n_resamples, seed)
    d = sb[metric] - sa[metric]
    a, b = ea.point()[metric], eb.point()[metric]
    return Comparison(
        metric=metric,
        split=split,
        name_a=names[0],
        name_b=names[1],
        a=a,
        b=b,
        difference=b - a,
        ci=percentile_interval(d, level),
        p_value=paired_p_value(d),
        n_images=len(y),
        n_resamples=n_resamples,
        unit=resampler.unit,
        n_units=resampler.n_units,
        level=level,
    )


def align_predictions(
    a: pd.DataFrame,
    classes_a: list[str],
    b: pd.DataFrame,
    classes_b: list[str],
    names: tuple[str, str],
    split: str,
) -> pd.DataFrame:
    """Both runs' rows of the same images, in one order; a clear error when the runs were
    not evaluated on the same images with the same classes."""
    if list(classes_a) != list(classes_b):
        raise ConfigError(
            f"runs {names[0]} and {names[1]} have different classes ({', '.join(classes_a)} vs "
            f"{', '.join(classes_b)}); only runs of one task can be compared"
        )
    pa, pb = set(a["path"]), set(b["path"])
    if pa != pb:
        raise ConfigError(
            f"runs {names[0]} ({len(pa)} {split} images) and {names[1]} ({len(pb)} {split} images) were "
            f"evaluated on different images ({len(pa & pb)} in common); compare runs of the same dataset, "
            "task and split"
        )
    merged = a.merge(b, on="path", suffixes=("_a", "_b"), validate="one_to_one")
    if (merged["target_a"] != merged["target_b"]).any():
        n = int((merged["target_a"] != merged["target_b"]).sum())
        raise ConfigError(
            f"runs {names[0]} and {names[1]} label {n} of the same images differently "
            "(different tasks); only runs of one task can be compared"
        )
    return merged


def compare_runs(
    run_a: str,
    run_b: str,
    split: str = "val",
    metric: str = "auc",
    *,
    which: str = "best",
    workspace: Any = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Comparison:
    """Paired bootstrap of ``metric`` (B - A) for two runs on one split."""
    from core.evaluate.run_eval import load_predictions, run_config, run_index, with_metadata

    names = _display_names(run_a, run_b, workspace)
    a, ca = load_predictions(run_a, split, which, workspace)
    b, cb = load_predictions(run_b, split, which, workspace)
    merged = align_predictions(a, ca, b, cb, names, split)
    merged = with_metadata(merged, run_index(run_config(run_a, workspace), workspace))
    groups = merged["patient_id"].to_numpy() if "patient_id" in merged.columns else None
    pa = merged[[f"prob/{c}_a" for c in ca]].to_numpy(dtype=np.float64)
    pb = merged[[f"prob/{c}_b" for c in ca]].to_numpy(dtype=np.float64)
    result = paired_bootstrap(
        merged["target_a"].to_numpy(),
        pa,
        pb,
        ca,
        metric,
        groups,
        n_resamples=n_resamples,
        seed=seed,
        names=names,
        split=split,
    )
    result.run_a, result.run_b = run_a, run_b
    return result


def _display_names(run_a: str, run_b: str, workspace: Any) -> tuple[str, str]:
    """Run names when they tell the runs apart, else their ids."""
    from core.errors import NotFoundError
    from core.runs.store import RunStore

    store = RunStore(workspace=workspace)
    try:
        na, nb = store.get_run(run_a).name, store.get_run(run_b).name
    except NotFoundError:
        return run_a, run_b
    return (na, nb) if na and nb and na != nb else (run_a, run_b)


# ---------------------------------------------------------------- seeds


@dataclass
class SeedGroup:
    key: str  # a short hash of ``seed_key``
    run_ids: list[str]
    seeds: list[int]
    name: str
    config: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.name} ({len(self.run_ids)} seeds)" if len(self.run_ids) > 1 else self.name


def seed_key(config: dict[str, Any]) -> str:
    """The config without the fields a repeat may change: equal keys = the same experiment."""
    return json.dumps({k: v for k, v in config.items() if k not in SEED_FIELDS}, sort_keys=True, default=str)


def group_by_seed(records: Iterable[Any]) -> list[SeedGroup]:
    """Runs (``RunRecord``s, newest first as the store lists them) grouped by ``seed_key``;
    every run is in exactly one group, groups in the order of their first run."""
    import hashlib

    groups: dict[str, SeedGroup] = {}
    for r in records:
        key = hashlib.sha1(seed_key(r.config).encode()).hexdigest()[:10]
        g = groups.get(key)
        if g is None:
            groups[key] = SeedGroup(
                key, [r.id], [int(r.config.get("seed", 0))], _base_name(r), dict(r.config)
            )
        else:
            g.run_ids.append(r.id)
            g.seeds.append(int(r.config.get("seed", 0)))
    return list(groups.values())


def _base_name(record: Any) -> str:
    name = str(record.config.get("name") or record.name or record.id)
    seed = record.config.get("seed")
    for suffix in (f"-seed{seed}", f"_seed{seed}", f" seed {seed}", f"-s{seed}"):
        if seed is not None and name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def seed_curves(
    metrics: pd.DataFrame,
    groups: Sequence[SeedGroup],
    metric: str = "auc",
    split: str = "val",
    band: str = "minmax",
) -> pd.DataFrame:
    """Per group and epoch: ``mean``, band ``lo``/``hi`` (``minmax``, or ``sd`` for
    mean +- 1 sd), ``sd`` and ``n`` (runs that reached the epoch). ``metrics``: rows of
    ``RunStore.metrics`` (run_id, epoch, split, name, value)."""
    if band not in ("minmax", "sd"):
        raise ConfigError(f"band {band!r} unknown; valid: minmax, sd")
    cols = ["group", "label", "epoch", "mean", "lo", "hi", "sd", "n"]
    rows = metrics[(metrics["split"] == split) & (metrics["name"] == metric)]
    if rows.empty:
        return pd.DataFrame(columns=cols)
    # The last value a run logged for an epoch (a resumed run may log an epoch twice).
    per_run = (
        rows.sort_values("id" if "id" in rows.columns else "epoch")
        .groupby(["run_id", "epoch"])["value"]
        .last()
    )
    per_run = per_run.reset_index()
    out = []
    for g in groups:
        part = per_run[per_run["run_id"].isin(g.run_ids)]
        if part.empty:
            continue
        stats = part.groupby("epoch")["value"].agg(["mean", "min", "max", "std", "count"]).reset_index()
        sd = stats["std"].fillna(0.0)
        lo, hi = (
            (stats["min"], stats["max"]) if band == "minmax" else (stats["mean"] - sd, stats["mean"] + sd)
        )
        out.append(
            pd.DataFrame(
                {
                    "group": g.key,
                    "label": g.label,
                    "epoch": stats["epoch"],
                    "mean": stats["mean"],
                    "lo": lo,
                    "hi": hi,
                    "sd": sd,
                    "n": stats["count"],
                }
            )
        )
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=cols)


def seed_summary(
    records: Iterable[Any], groups: Sequence[SeedGroup], metrics: Sequence[str] | None = None
) -> pd.DataFrame:
    """Best metrics as mean +- sd over each group's runs: ``group, label, n_runs, metric,
    mean, sd, text`` (``0.91 ± 0.02``; a lone run shows its value)."""
    by_id = {r.id: r for r in records}
    rows = []
    for g in groups:
        bests = [by_id[i].best for i in g.run_ids if i in by_id and by_id[i].best]
        names = metrics or sorted({k for b in bests for k in b if k != "best_epoch"})
        for m in names:
            values = np.array([float(b[m]) for b in bests if b.get(m) is not None], dtype=np.float64)
            if len(values) == 0:
                continue
            mean = float(values.mean())
            sd = float(values.std(ddof=1)) if len(values) > 1 else math.nan
            text = f"{mean:.3f} ± {sd:.3f}" if len(values) > 1 else f"{mean:.3f}"
            rows.append(
                {
                    "group": g.key,
                    "label": g.label,
                    "n_runs": len(values),
                    "metric": m,
                    "mean": mean,
                    "sd": sd,
                    "text": text,
                }
            )
    return pd.DataFrame(rows, columns=["group", "label", "n_runs", "metric", "mean", "sd", "text"])
