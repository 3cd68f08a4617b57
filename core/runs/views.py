"""Tables the Train and Compare pages show, built from run records and metric rows.

Pure functions (no streamlit, no store access): the pages fetch records and metrics, these
lay them out. Also the two small pieces of form logic worth a test: expanding a sweep into
run configs, and keeping a table's row selection on the same runs when rows move.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from core.evaluate.compare import METRIC_NAMES
from core.runs.store import RunRecord, RunStatus
from core.train.metrics import LOWER_IS_BETTER

if TYPE_CHECKING:
    from core.config import RunConfig

LIVE = (RunStatus.QUEUED, RunStatus.RUNNING)
# Val metrics shown for a run's best epoch, in this order (others follow alphabetically).
MAIN_METRICS = (
    "auc",
    "pr_auc",
    "balanced_accuracy",
    "f1",
    "sensitivity",
    "specificity",
    "precision",
    "accuracy",
    "loss",
)
TEST_METRICS = ("auc", "balanced_accuracy", "f1", "sensitivity", "specificity")
# Shown for a single run (nothing differs from itself).
KEY_FIELDS = (
    "arch",
    "pretrained",
    "img_size",
    "loss",
    "sampler",
    "optimizer",
    "lr",
    "schedule",
    "epochs",
    "batch_size",
)
_NOT_COMPARED = {"name"}  # always differs; the table's row label already shows it


# -- small formatting ----------------------------------------------------------------------


def format_duration(seconds: float | None) -> str:
    """``42 s``, ``3 min 20 s``, ``2 h 05 min``; "" for None or NaN."""
    if seconds is None or not math.isfinite(seconds):
        return ""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        m, r = divmod(s, 60)
        return f"{m} min {r:02d} s" if m < 10 else f"{m} min"
    h, r = divmod(s, 3600)
    return f"{h} h {r // 60:02d} min"


def strategy_label(config: Mapping[str, Any]) -> str:
    """``weighted_ce`` or ``focal + oversample``: the imbalance strategy of a config."""
    loss = str(config.get("loss", ""))
    sampler = str(config.get("sampler", "none"))
    return loss if sampler in ("", "none") else f"{loss} + {sampler}"


def monitor_of(rec: RunRecord) -> str:
    return str(rec.config.get("monitor", "auc"))


# -- progress, ETA, best -------------------------------------------------------------------


def eta_seconds(rec: RunRecord, now: float | None = None, min_progress: float = 0.02) -> float | None:
    """Time left of a running run, from its progress rate up to its last report (a resumed
    run's rate counts from its restart, so its first estimate is low). None when unknown."""
    if rec.status is not RunStatus.RUNNING or not rec.started:
        return None
    p = rec.progress
    if p >= 1.0:
        return 0.0
    if p < min_progress:
        return None
    now = time.time() if now is None else now
    reported = min(rec.heartbeat or now, now)
    spent = reported - rec.started
    if spent <= 0:
        return None
    return max(spent * (1.0 - p) / p - (now - reported), 0.0)


def best_from_metrics(metrics: pd.DataFrame, monitor: str) -> tuple[float, int] | None:
    """``(value, epoch)`` of the best val ``monitor`` in one run's metric rows (the first
    epoch among ties, as training keeps the first); None without val rows."""
    rows = metrics[(metrics["split"] == "val") & (metrics["name"] == monitor)].dropna(subset=["value"])
    if rows.empty:
        return None
    rows = rows.sort_values(["epoch", "id"] if "id" in rows else ["epoch"])
    values = rows["value"].to_numpy()
    i = int(values.argmin() if monitor in LOWER_IS_BETTER else values.argmax())
    return float(values[i]), int(rows["epoch"].iloc[i])


def best_epoch(rec: RunRecord, metrics: pd.DataFrame | None = None) -> int | None:
    """The epoch whose checkpoint is the run's best: recorded at the end, else from the rows."""
    epoch = rec.best.get("best_epoch")
    if isinstance(epoch, int | float) and epoch > 0:
        return int(epoch)
    if metrics is not None and not metrics.empty:
        found = best_from_metrics(metrics, monitor_of(rec))
        return found[1] if found else None
    return None


def best_metrics(rec: RunRecord, metrics: pd.DataFrame | None = None) -> dict[str, float]:
    """Val metrics at the run's best epoch (not its last), ``val_<name>`` and ``best_epoch``,
    plus ``test_<name>`` once it has test results. From the record once the run has
    finished, else from its metric rows so far."""
    out: dict[str, float] = {}
    if rec.best:
        out = {k: float(v) for k, v in rec.best.items() if isinstance(v, int | float) and "/" not in k}
    elif metrics is not None and not metrics.empty:
        epoch = best_epoch(rec, metrics)
        if epoch is not None:
            at = metrics[
                (metrics["split"] == "val") & (metrics["epoch"] == epoch) & ~metrics["name"].str.contains("/")
            ]
            # Resumed runs may repeat an epoch: the last value written wins, as in training.
            last = at.sort_values("id" if "id" in at else "epoch").groupby("name")["value"].last()
            out = {f"val_{k}": float(v) for k, v in last.items() if pd.notna(v)}
            out["best_epoch"] = float(epoch)
    for k, v in (rec.test or {}).items():
        if isinstance(v, int | float) and "/" not in k:
            out[f"test_{k}"] = float(v)
    return out


def live_best(metrics: pd.DataFrame, records: Iterable[RunRecord]) -> dict[str, tuple[float, int]]:
    """Best val monitor so far of each run that has no recorded best yet."""
    out: dict[str, tuple[float, int]] = {}
    if metrics.empty:
        return out
    groups = dict(tuple(metrics.groupby("run_id")))
    for rec in records:
        if rec.best or rec.id not in groups:
            continue
        found = best_from_metrics(groups[rec.id], monitor_of(rec))
        if found:
            out[rec.id] = found
    return out


# -- the Train page's runs table -------------------------------------------------------------


def _local_time(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts) if ts else None


def _note(rec: RunRecord) -> str:
    if rec.status is RunStatus.FAILED:
        return rec.error.splitlines()[0] if rec.error else "failed"
    if rec.status is RunStatus.RUNNING:
        return "cancelling..." if rec.cancel_requested else rec.message
    if rec.status is RunStatus.CANCELLED:
        if "before it started" in rec.message:
            return rec.message
        return "cancelled; resume continues from its last checkpoint"
    if rec.status is RunStatus.DONE:
        epoch = rec.best.get("best_epoch")
        return f"best checkpoint: epoch {int(epoch)}" if isinstance(epoch, int | float) and epoch > 0 else ""
    return rec.message  # queued: "queued to resume" after a resume


def runs_table(
    records: Sequence[RunRecord],
    best_so_far: Mapping[str, tuple[float, int]] | None = None,
    now: float | None = None,
) -> pd.DataFrame:
    """One row per run for the Train page: id, run, status, progress (%), epoch
    ("2/10"), ETA, best val monitor value, monitor, device, created, note."""
    now = time.time() if now is None else now
    best_so_far = best_so_far or {}
    rows = []
    for rec in records:
        monitor = monitor_of(rec)
        best = rec.best.get(f"val_{monitor}")
        if best is None and rec.id in best_so_far:
            best = best_so_far[rec.id][0]
        epochs = rec.config.get("epochs", "?")
        done = rec.info.get("last_epoch", rec.epoch) if rec.status.finished else rec.epoch
        rows.append(
            {
                "id": rec.id,
                "run": rec.name,
                "status": rec.status.value,
                "progress": round(100.0 * float(rec.progress), 1),
                "epoch": f"{done}/{epochs}" if rec.status is not RunStatus.QUEUED else f"0/{epochs}",
                "ETA": format_duration(eta_seconds(rec, now)),
                "best": float(best) if isinstance(best, int | float) else math.nan,
                "monitor": f"val {monitor}",
                "device": rec.device or rec.requested_device,
                "created": _local_time(rec.created),
                "note": _note(rec),
            }
        )
    columns = [
        "id",
        "run",
        "status",
        "progress",
        "epoch",
        "ETA",
        "best",
        "monitor",
        "device",
        "created",
        "note",
    ]
    return pd.DataFrame(rows, columns=columns)


# -- the Compare page ----------------------------------------------------------------------------


def compare_table(
    records: Sequence[RunRecord], best_so_far: Mapping[str, tuple[float, int]] | None = None
) -> pd.DataFrame:
    """One row per run to pick from: id, run, status, arch, strategy, best val monitor
    (so far, for a run still training), monitor, tags, created."""
    rows = []
    for rec in records:
        monitor = monitor_of(rec)
        best = rec.best.get(f"val_{monitor}")
        if best is None and best_so_far and rec.id in best_so_far:
            best = best_so_far[rec.id][0]
        rows.append(
            {
                "id": rec.id,
                "run": rec.name,
                "status": rec.status.value,
                "arch": str(rec.config.get("arch", "")),
                "strategy": strategy_label(rec.config),
                "best": float(best) if isinstance(best, int | float) else math.nan,
                "monitor": f"val {monitor}",
                "tags": ", ".join(rec.tags),
                "created": _local_time(rec.created),
            }
        )
    columns = ["id", "run", "status", "arch", "strategy", "best", "monitor", "tags", "created"]
    return pd.DataFrame(rows, columns=columns)


def filter_runs(
    records: Iterable[RunRecord],
    statuses: Iterable[str] = (),
    tags: Iterable[str] = (),
    archs: Iterable[str] = (),
    strategies: Iterable[str] = (),
) -> list[RunRecord]:
    """Runs matching every non-empty filter (any of its values; a run matches a tag filter
    when it has one of the tags)."""
    statuses, tags, archs, strategies = set(statuses), set(tags), set(archs), set(strategies)
    return [
        r
        for r in records
        if (not statuses or r.status.value in statuses)
        and (not tags or tags & set(r.tags))
        and (not archs or str(r.config.get("arch", "")) in archs)
        and (not strategies or strategy_label(r.config) in strategies)
    ]


def _flat_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """One level of keys: mappings become ``loss_params.gamma``; the task is its name (or
    its JSON when unnamed); lists become text."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key == "task":
            out[key] = config.get("task_name") or (
                json.dumps(value, sort_keys=True) if value else "(default)"
            )
        elif isinstance(value, Mapping):
            for k, v in value.items():
                out[f"{key}.{k}"] = _cell(v)
        else:
            out[key] = _cell(value)
    out.pop("task_name", None)
    return out


def _cell(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    if isinstance(value, Mapping):
        return json.dumps(value, sort_keys=True)
    return value


def _field_order() -> list[str]:
    from core.config import RunConfig

    return [f.name for f in fields(RunConfig)]


def differing_fields(configs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Config keys (``loss_params.gamma`` for parameters) whose values are not the same in
    every config, in RunConfig's field order. A key missing from a config differs."""
    flats = [_flat_config(c) for c in configs]
    if len(flats) < 2:
        return []
    keys = set().union(*flats) - _NOT_COMPARED
    missing = object()
    differ = {k for k in keys if len({repr(f.get(k, missing)) for f in flats}) > 1}
    order = {name: i for i, name in enumerate(_field_order())}
    return sorted(differ, key=lambda k: (order.get(k.split(".")[0], len(order)), k))


def _metric_columns(bests: Sequence[Mapping[str, float]]) -> list[str]:
    present = set().union(*bests) if bests else set()
    val = [f"val_{m}" for m in MAIN_METRICS if f"val_{m}" in present]
    val += sorted(k for k in present if k.startswith("val_") and k not in val)
    test = [f"test_{m}" for m in TEST_METRICS if f"test_{m}" in present]
    return (["best_epoch"] if "best_epoch" in present else []) + val + test


def selected_runs_table(
    records: Sequence[RunRecord], metrics: Mapping[str, pd.DataFrame] | None = None
) -> pd.DataFrame:
    """The selected runs side by side: status, the config fields that differ between them
    (key fields for a single run), then their best-epoch metrics. Indexed by run name."""
    metrics = metrics or {}
    flats = [_flat_config(r.config) for r in records]
    keys = (
        differing_fields([r.config for r in records])
        if len(records) > 1
        else [k for k in KEY_FIELDS if records and k in flats[0]]
    )
    bests = [best_metrics(r, metrics.get(r.id)) for r in records]
    metric_cols = _metric_columns(bests)
    rows = []
    for rec, flat, best in zip(records, flats, bests, strict=True):
        row: dict[str, Any] = {"run": rec.name, "status": rec.status.value}
        row.update({k: flat.get(k, "") for k in keys})
        row.update(
            {
                k.replace("_", " ", 1) if k != "best_epoch" else "best epoch": best.get(k, math.nan)
                for k in metric_cols
            }
        )
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    if table["run"].duplicated().any():
        table["run"] = [f"{r.name} ({r.id})" for r in records]
    for key in keys:  # mixed numbers and text (a missing key) render as text
        if table[key].map(type).nunique() > 1:
            table[key] = table[key].astype(str)
    return table.set_index("run")


def run_starts(records: Iterable[RunRecord], metrics: Mapping[str, pd.DataFrame]) -> dict[str, float]:
    """When each run started, for a wall-time axis: its first metric row or its start,
    whichever is earlier (a resumed run's ``started`` is its restart)."""
    out = {}
    for rec in records:
        df = metrics.get(rec.id)
        first = float(df["time"].min()) if df is not None and not df.empty else math.inf
        out[rec.id] = min(first, rec.started or math.inf, rec.created or math.inf)
    return out


def metrics_csv(metrics: Mapping[str, pd.DataFrame], names: Mapping[str, str]) -> bytes:
    """All metric rows of the runs, long form: run_id, run, split, metric, epoch, step,
    value, time (Unix seconds), minutes (since the run's first row)."""
    parts = []
    for run_id, df in metrics.items():
        if df.empty:
            continue
        part = df[["split", "name", "epoch", "step", "value", "time"]].rename(columns={"name": "metric"})
        part.insert(0, "run", names.get(run_id, run_id))
        part.insert(0, "run_id", run_id)
        part["minutes"] = (part["time"] - part["time"].min()) / 60.0
        parts.append(part)
    columns = ["run_id", "run", "split", "metric", "epoch", "step", "value", "time", "minutes"]
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
    return table.to_csv(index=False).encode()


def metric_names(metrics: Iterable[pd.DataFrame]) -> list[str]:
    """Metric names present, main ones first, then the rest, per-class ones last."""
    present: set[str] = set()
    for df in metrics:
        present |= set(df["name"].unique())
    head = [m for m in (*MAIN_METRICS, "batch_loss", "lr", "images_per_s", "data_wait_share") if m in present]
    rest = sorted(present - set(head), key=lambda n: ("/" in n, n))
    return head + rest


# -- form helpers --------------------------------------------------------------------------------


def remap_selection(
    last_ids: Sequence[str], positions: Iterable[int], current_ids: Sequence[str]
) -> list[int]:
    """Row positions of the runs that were selected (``positions`` into ``last_ids``, the
    table as last shown) in the table as it is now: a selection follows its runs when new
    runs push rows down, and drops runs that are gone."""
    where = {run_id: i for i, run_id in enumerate(current_ids)}
    picked = [last_ids[p] for p in positions if 0 <= p < len(last_ids)]
    return sorted(where[r] for r in picked if r in where)


def sweep_configs(
    base: Mapping[str, Any],
    archs: Sequence[str],
    losses: Sequence[str],
    samplers: Sequence[str],
    seeds: Sequence[int],
    loss_params: Mapping[str, Mapping[str, Any]] | None = None,
    sampler_params: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[RunConfig]:
    """Every combination of architecture x loss x sampler x seed as a checked RunConfig
    (raises ConfigError on the first bad one, before anything is queued). With more than one
    run, names are ``<name>-<arch>-<loss>[-<sampler>][-s<seed>]``."""
    from core.config import RunConfig
    from core.errors import ConfigError

    if not (archs and losses and samplers and seeds):
        raise ConfigError("a sweep needs at least one architecture, loss, sampler and seed")
    combos = list(itertools.product(archs, losses, samplers, seeds))
    prefix = str(base.get("name", "")).strip()
    out = []
    for arch, loss, sampler, seed in combos:
        cfg = dict(base, arch=arch, loss=loss, sampler=sampler, seed=int(seed))
        cfg["loss_params"] = dict((loss_params or {}).get(loss, {}))
        cfg["sampler_params"] = dict((sampler_params or {}).get(sampler, {}))
        if len(combos) > 1:
            parts = [prefix] if prefix else []
            parts += [arch, loss] + ([sampler] if sampler != "none" else [])
            parts += [f"s{seed}"] if len(set(seeds)) > 1 else []
            cfg["name"] = "-".join(parts)
        out.append(RunConfig.from_dict(cfg))
    return out


def strategy_preview(
    classes: Sequence[str],
    counts: Sequence[int],
    losses: Mapping[str, Mapping[str, Any]],
    samplers: Mapping[str, Mapping[str, Any]],
) -> tuple[pd.DataFrame, list[str]]:
    """What each imbalance strategy will do on this training split: per class, its train
    images, the loss's class weight (``weight · <loss>``; 1 where the loss weighs classes
    equally) and the sampler's expected images per epoch (``per epoch · <sampler>``).
    Returns the table and one error line per strategy that cannot run here."""
    from core.errors import ChestLabError
    from core.train import losses as loss_registry
    from core.train import samplers as sampler_registry

    table = pd.DataFrame({"class": list(classes), "train images": [int(c) for c in counts]})
    errors: list[str] = []
    for name, params in losses.items():
        try:
            weights = loss_registry.class_weights(name, counts, params)
        except ChestLabError as exc:
            errors.append(str(exc))
            continue
        table[f"weight · {name}"] = [1.0] * len(classes) if weights is None else [float(w) for w in weights]
    for name, params in samplers.items():
        if name == "none":
            continue  # every image once per epoch: the train column already says it
        try:
            summary = sampler_registry.sampling_preview(name, counts, params)
        except ChestLabError as exc:
            errors.append(str(exc))
            continue
        table[f"per epoch · {name}"] = [round(float(v), 1) for v in summary["per_class_expected"]]
    return table, errors


def parse_seeds(text: str) -> list[int]:
    """``"0, 1, 2"`` or ``"0-4"`` -> seeds (sorted, unique); ConfigError names the bad part."""
    from core.errors import ConfigError

    seeds: set[int] = set()
    for part in (p.strip() for p in text.replace(";", ",").split(",")):
        if not part:
            continue
        try:
            if "-" in part[1:]:
                lo, hi = (int(x) for x in part.split("-", 1))
                if hi < lo or hi - lo > 1000:
                    raise ValueError
                seeds.update(range(lo, hi + 1))
            else:
                seeds.add(int(part))
        except ValueError:
            raise ConfigError(f"seeds: {part!r} is not a whole number or a range like 0-4") from None
    if not seeds or min(seeds) < 0:
        raise ConfigError(f"seeds: give one or more whole numbers >= 0, got {text!r}")
    return sorted(seeds)


# -- trustworthy evaluation on the Compare page (issue 10) ---------------------------------------

CI_METRICS = ("auc", "pr_auc", "sensitivity", "specificity", "balanced_accuracy")
SEED_METRICS = ("val_auc", "val_balanced_accuracy", "val_sensitivity", "val_specificity", "val_loss")


def metric_label(name: str) -> str:
    """``auc`` -> ``AUC``, ``sensitivity/covid`` -> ``sensitivity (covid)``."""
    base, _, cls = name.partition("/")
    label = METRIC_NAMES.get(base, base.replace("_", " "))
    return f"{label} ({cls})" if cls else label


def resampled_units(result: Any) -> str:
    """What a bootstrap resampled: ``412 images`` or ``412 images (180 patients)``."""
    text = f"{result.n_images:,} images"
    return text + (f" ({result.n_units:,} patients)" if result.unit == "patients" else "")


def interval_table(
    results: Mapping[str, Any], metrics: Sequence[str] = CI_METRICS, digits: int = 2
) -> pd.DataFrame:
    """One row per run (index: its label), each metric as ``0.91 [0.87-0.94]``, then what
    was resampled. ``results``: run label -> ``BootstrapResult``."""
    rows = []
    for label, r in results.items():
        row: dict[str, Any] = {"run": label}
        row.update({metric_label(m): r.text(m, digits) for m in metrics})
        row["resampled"] = resampled_units(r)
        rows.append(row)
    columns = ["run", *(metric_label(m) for m in metrics), "resampled"]
    return pd.DataFrame(rows, columns=columns).set_index("run")


def with_interval_column(
    table: pd.DataFrame, records: Sequence[RunRecord], texts: Mapping[str, str], column: str
) -> pd.DataFrame:
    """``selected_runs_table`` with ``column`` (text like ``0.91 [0.87-0.94]``, run id ->
    text) placed after its point value (``val auc``), or after the config fields."""
    if table.empty or not texts:
        return table
    out = table.copy()
    values = [texts.get(r.id, "") for r in records]  # the table's rows are the records, in order
    after = column.split(" (")[0]
    at = list(out.columns).index(after) + 1 if after in out.columns else len(out.columns)
    out.insert(at, column, values)
    return out


def distinct_seed_groups(groups: Sequence[Any]) -> list[Any]:
    """Seed groups (``compare.group_by_seed``) whose labels tell them apart: groups that share
    a name (two experiments both called ``resnet18-weighted_ce``) get the config fields that
    differ between them, e.g. ``resnet18-weighted_ce · img_size=64``. Figures and tables key
    their rows by label, so equal labels would merge different experiments."""
    from dataclasses import replace

    from core.evaluate.compare import SEED_FIELDS

    counts: dict[str, int] = {}
    for g in groups:
        counts[g.name] = counts.get(g.name, 0) + 1
    out = []
    for g in groups:
        if counts[g.name] == 1:
            out.append(g)
            continue
        same = [h for h in groups if h.name == g.name]
        fields = [f for f in differing_fields([h.config for h in same]) if f.split(".")[0] not in SEED_FIELDS]
        flat = _flat_config(g.config)
        detail = ", ".join(f"{f}={flat.get(f, '')}" for f in fields[:3]) or g.key
        out.append(replace(g, name=f"{g.name} · {detail}"))
    return out


def seed_table(records: Sequence[RunRecord], groups: Sequence[Any]) -> pd.DataFrame:
    """Best val metrics as mean ± sd over each group of runs that differ only by seed:
    one row per group (index: its label), ``runs`` (how many), then one text column per
    metric (``0.912 ± 0.013``; a lone run shows its value)."""
    from core.evaluate.compare import seed_summary

    groups = distinct_seed_groups(groups)
    present = {k for r in records for k in (r.best or {})}
    metrics = [m for m in SEED_METRICS if m in present]
    summary = seed_summary(records, groups, metrics or None)
    if summary.empty:
        return pd.DataFrame()
    table = summary.pivot_table(index="label", columns="metric", values="text", aggfunc="first", sort=False)
    table = table[[m for m in (metrics or table.columns) if m in table.columns]]
    table.columns = [c.replace("_", " ", 1) for c in table.columns]
    runs = summary.groupby("label", sort=False)["n_runs"].max()
    table.insert(0, "runs", runs.reindex(table.index).astype(int))
    seeds = {g.label: ", ".join(str(s) for s in sorted(g.seeds)) for g in groups}
    table.insert(1, "seeds", [seeds.get(i, "") for i in table.index])
    table.index.name = "experiment"
    return table


def subgroup_table(report: Any, digits: int = 2) -> pd.DataFrame:
    """A subgroup report for a page: the group, its counts, sensitivity and specificity for
    the positive class at the operating point, AUC, balanced accuracy, ECE and Brier (each
    with its interval), and a note on groups too small to read."""
    pos = report.positive_class
    t = report.display_table(digits)
    out = pd.DataFrame(
        {
            "column": t["column"],
            "group": t["value"],
            "images": t["n"],
            "note": [f"too small (< {report.min_n})" if s else "" for s in t["too_small"]],
            "patients": t["n_patients"],
            f"{pos} images": t["n_positive"],
            f"sensitivity ({pos})": t["pos_sensitivity"],
            f"specificity ({pos})": t["pos_specificity"],
            "AUC": t["auc"],
            "balanced accuracy": t["balanced_accuracy"],
            "ECE": t["ece"],
            "Brier": t["brier"],
        }
    )
    if out["patients"].isna().all():
        out = out.drop(columns=["patients"])
    return out
