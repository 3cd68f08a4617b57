"""From a run config to tensors: scan the dataset, apply the task, build the image cache,
and feed batches to the device.

Batches come from the uint8 cache by index (no DataLoader, no per-epoch decoding). On CUDA
the whole split sits on the GPU when it fits, else batches are copied from pinned memory
with ``non_blocking=True``; augmentation runs on batched tensors on the device.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from core.config import RunConfig
from core.data.cache import ImageCache, build_cache, streaming_mean_std
from core.data.tasks import SPLITS, Task, apply_task
from core.errors import ConfigError
from core.progress import ProgressFn, no_progress

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class SplitData:
    rows: np.ndarray  # rows of the cache
    targets: np.ndarray  # class index per row
    paths: list[str]

    def __len__(self) -> int:
        return len(self.rows)


@dataclass
class TrainingData:
    classes: list[str]
    table: pd.DataFrame
    cache: ImageCache
    splits: dict[str, SplitData]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    skipped: list[dict[str, str]] = field(default_factory=list)

    @property
    def train_counts(self) -> list[int]:
        return np.bincount(self.splits["train"].targets, minlength=len(self.classes)).tolist()


def load_task_table(config: RunConfig, workspace: Any = None, progress: ProgressFn = no_progress) -> tuple[pd.DataFrame, list[str]]:
    """Scan the config's dataset (cached) and apply its task."""
    table, classes, _ = _scan_task(config, workspace, progress)
    return table, classes


def _scan_task(config: RunConfig, workspace: Any, progress: ProgressFn) -> tuple[pd.DataFrame, list[str], Any]:
    from core.data.index import scan

    if not config.data:
        raise ConfigError("no dataset given: pass --data PATH or --task NAME")
    report = scan(config.data, config.format, options=dict(config.format_options), workspace=workspace, progress=progress)
    task = Task.from_dict(config.task) if config.task else Task()
    table = apply_task(report.index, task)
    classes = list(table.attrs["classes"])
    if len(classes) < 2:
        raise ConfigError(
            f"dataset {config.data}: the task leaves one class ({classes[0]!r}); training needs at least two"
        )
    return table, classes, report


def prepare_data(config: RunConfig, workspace: Any = None, progress: ProgressFn = no_progress) -> TrainingData:
    table, classes, report = _scan_task(config, workspace, progress)
    cache = build_cache(table["path"].tolist(), config.img_size, workspace=workspace, progress=progress)
    rows = cache.rows(table["path"].tolist())
    good = cache.ok[rows]
    # What the run could not use, with the reason: files the scan rejected (unreadable,
    # truncated, not an image) and files the cache could not decode.
    skipped = [{"path": s.path, "reason": s.reason} for s in report.skipped]
    in_table = set(table["path"])
    skipped += [f for f in cache.failures if f["path"] in in_table]
    splits: dict[str, SplitData] = {}
    for s in SPLITS:
        m = (table["split"].to_numpy() == s) & good
        splits[s] = SplitData(rows[m], table["target"].to_numpy()[m].astype(np.int64), table["path"][m].tolist())
    for s in ("train", "val"):
        if len(splits[s]) == 0:
            raise ConfigError(f"dataset {config.data}: the {s} split is empty after the task; change the split policy")
    counts = np.bincount(splits["train"].targets, minlength=len(classes))
    empty = [c for c, n in zip(classes, counts, strict=True) if n == 0]
    if empty:
        raise ConfigError(f"dataset {config.data}: class(es) {', '.join(empty)} have no training images")
    if config.normalize == "dataset":
        m, sd = streaming_mean_std(cache.array, splits["train"].rows)
        mean, std = (m,) * config.in_channels, (sd,) * config.in_channels
    elif config.in_channels == 3:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    else:
        # A gray image fed to a 1-channel conv whose weights are the sum of the RGB kernels
        # behaves like the same image repeated x3 when normalised by the channel average.
        mean, std = (float(np.mean(IMAGENET_MEAN)),), (float(np.mean(IMAGENET_STD)),)
    return TrainingData(classes, table, cache, splits, tuple(mean), tuple(std), skipped)


class Feeder:
    """Yields normalised (x, y) batches of one split on ``device``."""

    def __init__(
        self,
        cache: ImageCache,
        split: SplitData,
        *,
        device: torch.device,
        in_channels: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        channels_last: bool,
    ) -> None:
        self.cache, self.split, self.device = cache, split, device
        self.in_channels = in_channels
        self.channels_last = channels_last
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1)
        self._gpu: torch.Tensor | None = None
        if device.type == "cuda":
            nbytes = len(split) * cache.size * cache.size
            free, _ = torch.cuda.mem_get_info(device)
            if nbytes < 0.25 * free:
                self._gpu = torch.from_numpy(np.ascontiguousarray(cache.array[split.rows])).to(device)

    def batch(self, positions: np.ndarray, augment: Callable[..., torch.Tensor] | None = None,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``positions`` index into the split (not the cache)."""
        y = torch.from_numpy(self.split.targets[positions])
        if self._gpu is not None:
            x8 = self._gpu[torch.from_numpy(positions).to(self.device)]
            y = y.to(self.device, non_blocking=True)
        else:
            x8 = torch.from_numpy(np.asarray(self.cache.array[self.split.rows[positions]]))
            if self.device.type == "cuda":
                x8 = x8.pin_memory().to(self.device, non_blocking=True)
                y = y.pin_memory().to(self.device, non_blocking=True)
        x = x8.unsqueeze(1).float().div_(255.0)
        if augment is not None:
            x = augment(x, generator)
        if self.in_channels == 3:
            x = x.expand(-1, 3, -1, -1)
        x = (x - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y
