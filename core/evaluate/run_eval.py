"""Metrics of a run's checkpoint on one split (``python -m core evaluate``).

``evaluate_run`` gives the metrics of issue 4; ``extended_evaluation`` adds what makes them
trustworthy (issue 10): bootstrap intervals, the operating point chosen on val, calibration,
subgroups. Predictions come from the ``predictions_<split>.csv`` a finished run wrote with
its best checkpoint (milliseconds), else from running the checkpoint (``split_predictions``);
patient ids and metadata from the run's dataset index, joined on ``path``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from core.errors import ConfigError
from core.progress import ProgressFn, no_progress

PER_CLASS = ("sensitivity", "specificity", "precision", "f1", "auc")
# core.train.checkpoint.BEST, named here because importing that module loads torch (seconds),
# which reading a predictions CSV does not need.
BEST_CHECKPOINT = "best.pt"


def split_predictions(
    run_id: str,
    split: str = "test",
    which: str = "best",
    workspace: Any = None,
    progress: ProgressFn = no_progress,
) -> tuple[pd.DataFrame, list[str]]:
    """Predictions of the run's checkpoint on a split: path, target, pred, true_class,
    pred_class, prob/<class>... (and the class names)."""
    import torch

    from core.evaluate.predict import load_run_model
    from core.train.data import Feeder, prepare_data
    from core.train.device import resolve_precision
    from core.train.loop import probabilities

    loaded = load_run_model(run_id, which, workspace)
    data = prepare_data(loaded.config.replace(device="cpu"), workspace, progress)
    if split not in data.splits or len(data.splits[split]) == 0:
        have = ", ".join(s for s, d in data.splits.items() if len(d))
        raise ConfigError(f"run {run_id}: its dataset has no {split!r} images (splits with images: {have})")
    if list(data.classes) != list(loaded.classes):
        raise ConfigError(
            f"run {run_id}: the dataset's classes {data.classes} no longer match the run's {loaded.classes}"
        )
    precision = resolve_precision(loaded.config.precision, loaded.device)
    feeder = Feeder(
        data.cache,
        data.splits[split],
        device=loaded.device,
        in_channels=loaded.config.in_channels,
        mean=loaded.mean,
        std=loaded.std,
        channels_last=precision.channels_last,
    )
    model = loaded.model.to(memory_format=torch.channels_last) if precision.channels_last else loaded.model
    model.eval()
    n, bs, probs = len(feeder.split), 64, []
    with torch.no_grad():
        for start in range(0, n, bs):
            x, _ = feeder.batch(np.arange(start, min(start + bs, n)))
            with precision.autocast(loaded.device):
                probs.append(probabilities(model(x)).cpu().numpy())
            progress(min(start + bs, n), n, f"predicting {split}")
    p = np.concatenate(probs)
    s = data.splits[split]
    df = pd.DataFrame({"path": s.paths, "target": s.targets, "pred": p.argmax(axis=1)})
    df["true_class"] = [loaded.classes[i] for i in df["target"]]
    df["pred_class"] = [loaded.classes[i] for i in df["pred"]]
    for k, c in enumerate(loaded.classes):
        df[f"prob/{c}"] = p[:, k]
    return df, list(loaded.classes)


def probs_of(df: pd.DataFrame, classes: list[str]) -> np.ndarray:
    return df[[f"prob/{c}" for c in classes]].to_numpy(dtype=np.float64)


def evaluate_run(
    run_id: str,
    split: str = "test",
    which: str = "best",
    workspace: Any = None,
    progress: ProgressFn = no_progress,
) -> dict[str, Any]:
    df, classes = load_predictions(run_id, split, which, workspace, progress)
    return base_metrics(run_id, split, df, classes)


def base_metrics(run_id: str, split: str, df: pd.DataFrame, classes: list[str]) -> dict[str, Any]:
    """The ``evaluate`` contract of issue 4 for a predictions table."""
    from core.train.metrics import classification_metrics

    m = classification_metrics(df["target"].to_numpy(), probs_of(df, classes), classes)
    counts = np.bincount(df["target"].to_numpy(), minlength=len(classes))
    return {
        "run_id": run_id,
        "split": split,
        "n_images": int(len(df)),
        "classes": classes,
        "accuracy": m["accuracy"],
        "balanced_accuracy": m["balanced_accuracy"],
        "precision": m["precision"],
        "recall": m["sensitivity"],
        "sensitivity": m["sensitivity"],
        "specificity": m["specificity"],
        "f1": m["f1"],
        "auc": m["auc"],
        "pr_auc": m["pr_auc"],
        "confusion_matrix": m["confusion_matrix"],
        "per_class": {
            c: {"n": int(counts[i]), **{k: m[f"{k}/{c}"] for k in PER_CLASS}} for i, c in enumerate(classes)
        },
    }


# ---------------------------------------------------------------- trustworthy evaluation (issue 10)


def load_predictions(
    run_id: str,
    split: str = "test",
    which: str = "best",
    workspace: Any = None,
    progress: ProgressFn = no_progress,
) -> tuple[pd.DataFrame, list[str]]:
    """A run's predictions on a split: the ``predictions_<split>.csv`` the run wrote with its
    best checkpoint when it is there and not older than that checkpoint (fast), else the
    checkpoint run on the split (``split_predictions``)."""
    from core.runs import run_dir

    folder = run_dir(run_id, workspace)
    csv = folder / f"predictions_{split}.csv"
    best = folder / "checkpoints" / BEST_CHECKPOINT
    if (
        which == "best"
        and csv.exists()
        and (not best.exists() or csv.stat().st_mtime >= best.stat().st_mtime)
    ):
        df = pd.read_csv(csv, dtype={"path": "str", "true_class": "str", "pred_class": "str"})
        classes = [c[len("prob/") :] for c in df.columns if c.startswith("prob/")]
        return df, classes
    if which == "best" and not best.exists() and not folder.exists():
        from core.errors import NotFoundError

        raise NotFoundError(f"no run {run_id!r} in this workspace (list them with: python -m core runs)")
    return split_predictions(run_id, split, which, workspace, progress)


def run_config(run_id: str, workspace: Any = None) -> dict[str, Any]:
    """The run's stored config (from the store, else its folder's ``config.json``)."""
    import json

    from core.errors import NotFoundError
    from core.runs import run_dir
    from core.runs.store import RunStore

    try:
        return RunStore(workspace=workspace).get_run(run_id).config
    except NotFoundError:
        path = run_dir(run_id, workspace) / "config.json"
        if path.exists():
            return json.loads(path.read_text())
        raise


def run_index(config: dict[str, Any], workspace: Any = None) -> pd.DataFrame | None:
    """The dataset index of a run (cached scan), or None when the dataset cannot be read
    any more (moved or deleted): intervals then resample images, subgroups are skipped."""
    from core.data.index import scan
    from core.errors import ChestLabError

    if not config.get("data"):
        return None
    try:
        return scan(
            config["data"],
            config.get("format", "auto"),
            options=dict(config.get("format_options") or {}),
            workspace=workspace,
        ).index
    except ChestLabError:
        return None


def with_metadata(df: pd.DataFrame, index: pd.DataFrame | None) -> pd.DataFrame:
    """Predictions joined with the index's columns (patient id, metadata) on ``path``."""
    if index is None:
        return df
    extra = [c for c in index.columns if c not in df.columns or c == "path"]
    meta = index[extra].drop_duplicates("path")
    return df.merge(meta, on="path", how="left", validate="many_to_one")


def _patients(df: pd.DataFrame) -> np.ndarray | None:
    return df["patient_id"].to_numpy() if "patient_id" in df.columns else None


def run_bootstrap(
    run_id: str,
    split: str = "val",
    workspace: Any = None,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    which: str = "best",
) -> Any:
    """Bootstrap intervals of a run's metrics on a split (patients resampled when the
    dataset names them): a ``core.evaluate.bootstrap.BootstrapResult`` (``.text("auc")``)."""
    from core.evaluate.bootstrap import bootstrap_metrics

    df, classes = load_predictions(run_id, split, which, workspace)
    df = with_metadata(df, run_index(run_config(run_id, workspace), workspace))
    return bootstrap_metrics(
        df["target"].to_numpy(),
        probs_of(df, classes),
        classes,
        _patients(df),
        n_resamples=n_resamples,
        seed=seed,
    )


def extended_evaluation(
    run_id: str,
    split: str = "test",
    which: str = "best",
    workspace: Any = None,
    progress: ProgressFn = no_progress,
    *,
    n_resamples: int = 1000,
    rule: str = "sensitivity",
    target: float = 0.95,
    positive: str | None = None,
    subgroups: list[str] | None = None,
    calibrated: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    """``evaluate_run``'s metrics plus intervals (``ci``), the operating point chosen on val,
    calibration, subgroups; ``calibrated`` applies the run's temperature (fitted on val and
    stored with the run the first time)."""
    from core.evaluate.bootstrap import bootstrap_metrics
    from core.evaluate.calibration import calibrate, calibration_metrics, load_temperature, save_temperature
    from core.evaluate.subgroups import subgroup_metrics

    config = run_config(run_id, workspace)
    df, classes = load_predictions(run_id, split, which, workspace, progress)
    val, _ = (df, classes) if split == "val" else load_predictions(run_id, "val", which, workspace, progress)
    temperature = None
    if calibrated:
        fit = load_temperature(run_id, workspace)
        if fit is None:
            fit = calibrate(val["target"].to_numpy(), probs_of(val, classes), classes)
            save_temperature(run_id, fit, workspace)
        temperature = fit.temperature
        df, val = _tempered(df, classes, temperature), _tempered(val, classes, temperature)
    df = with_metadata(df, run_index(config, workspace))
    y, p = df["target"].to_numpy(), probs_of(df, classes)
    boot = bootstrap_metrics(y, p, classes, _patients(df), n_resamples=n_resamples, seed=seed)
    op = operating_point_json(val, df, classes, positive, rule, target, split)
    sub = subgroup_metrics(
        df,
        classes,
        subgroups,
        positive=positive,
        threshold=op.get("threshold"),
        n_resamples=n_resamples,
        seed=seed,
    )
    return {
        **base_metrics(run_id, split, df, classes),
        "ci": boot.ci_json(),
        "ci_method": {
            "resamples": boot.n_resamples,
            "level": boot.level,
            "unit": boot.unit,
            "n_units": boot.n_units,
            "stratified": "by class",
        },
        "operating_point": op,
        "calibration": {**calibration_metrics(y, p, classes), "temperature": temperature},
        "subgroups": sub.to_json(),
        "subgroup_gap": sub.gap_sentence,
    }


def _tempered(df: pd.DataFrame, classes: list[str], temperature: float) -> pd.DataFrame:
    from core.evaluate.calibration import apply_temperature

    p = apply_temperature(probs_of(df, classes), temperature)
    out = df.copy()
    for k, c in enumerate(classes):
        out[f"prob/{c}"] = p[:, k]
    return out


def operating_point_json(
    val: pd.DataFrame,
    df: pd.DataFrame,
    classes: list[str],
    positive: str | None = None,
    rule: str = "sensitivity",
    target: float = 0.95,
    split: str = "test",
) -> dict[str, Any]:
    """The operating point's JSON; when none can be chosen (val has one kind of image) its
    keys are null and ``error`` says why. A class that is not the run's is an error."""
    from core.errors import ChestLabError
    from core.evaluate.operating_point import operating_point

    # Two classes: the threshold as log-odds, a BCE run's threshold on its logit (the loss
    # registry that says which runs are BCE imports torch; a report need not wait for it).
    single = len(classes) == 2
    try:
        return operating_point(
            val, df, classes, positive=positive, rule=rule, target=target, split=split, single_logit=single
        ).to_json()
    except ChestLabError as exc:
        if positive is not None and positive not in classes:
            raise
        keys = ("threshold", "sensitivity", "specificity", "ppv", "npv")
        return {**dict.fromkeys(keys), "chosen_on": "val", "error": str(exc)}
