"""Metrics of a run's checkpoint on one split (``python -m core evaluate``)."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from core.errors import ConfigError
from core.progress import ProgressFn, no_progress

PER_CLASS = ("sensitivity", "specificity", "precision", "f1", "auc")


def split_predictions(run_id: str, split: str = "test", which: str = "best", workspace: Any = None,
                      progress: ProgressFn = no_progress) -> tuple[pd.DataFrame, list[str]]:
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
        raise ConfigError(f"run {run_id}: the dataset's classes {data.classes} no longer match the run's {loaded.classes}")
    precision = resolve_precision(loaded.config.precision, loaded.device)
    feeder = Feeder(data.cache, data.splits[split], device=loaded.device, in_channels=loaded.config.in_channels,
                    mean=loaded.mean, std=loaded.std, channels_last=precision.channels_last)
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


def evaluate_run(run_id: str, split: str = "test", which: str = "best", workspace: Any = None,
                 progress: ProgressFn = no_progress) -> dict[str, Any]:
    from core.train.metrics import classification_metrics

    df, classes = split_predictions(run_id, split, which, workspace, progress)
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
