"""Class-imbalance strategies that act through sampling (registry "sampler").

The loop reads a uint8 cache by index (no DataLoader), so a sampler hands it the array of
training-set indices for each epoch. Every draw comes from ``numpy.random.default_rng([seed,
epoch])``: an epoch's indices depend only on the seed and the epoch number, so a resumed
run sees the same images as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from core.errors import ConfigError
from core.registry import Registry
from core.train.losses import ParamSpec, validate_params


class EpochSampler(Protocol):
    summary: dict[str, Any]  # JSON-able: strategy, epoch_size, per_class_expected

    def indices(self, epoch: int) -> np.ndarray:
        """Indices into the training set for ``epoch``, deterministic given seed and epoch."""
        ...


BuildSamplerFn = Callable[[np.ndarray, Mapping[str, Any], int], EpochSampler]


@dataclass(frozen=True)
class SamplerSpec:
    name: str
    description: str
    params: dict[str, ParamSpec]
    build: BuildSamplerFn


SAMPLERS: Registry[SamplerSpec] = Registry("sampler")


def get_sampler(name: str) -> SamplerSpec:
    return SAMPLERS.get(name)


def list_samplers() -> list[str]:
    return SAMPLERS.names()


def build_sampler(
    name: str, labels: np.ndarray | Sequence[int], params: Mapping[str, Any] | None = None, seed: int = 0
) -> EpochSampler:
    spec = get_sampler(name)
    full = validate_params(f"sampler {name!r}", spec.params, params)
    return spec.build(_check_labels(labels), full, int(seed))


def sampling_preview(
    name: str, class_counts: Sequence[int], params: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Expected images per class per epoch (for the Train form), without the labels."""
    counts = [int(c) for c in class_counts]
    labels = np.repeat(np.arange(len(counts)), counts)
    summary = dict(build_sampler(name, labels, params).summary)
    expected = list(summary["per_class_expected"])
    # classes at the end with no images are invisible to bincount; show them as 0
    summary["per_class_expected"] = expected + [0.0] * (len(counts) - len(expected))
    return summary


def _check_labels(labels: np.ndarray | Sequence[int]) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1 or arr.size == 0:
        raise ConfigError(f"sampler needs a non-empty 1-D array of class indices, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0:
        raise ConfigError("sampler labels must be non-negative integer class indices")
    return arr.astype(np.int64, copy=False)


def _rng(seed: int, epoch: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch])


# ---------------------------------------------------------------------------------------
# Entries


class PermutationSampler:
    """Every image once per epoch, in a new order."""

    def __init__(self, labels: np.ndarray, seed: int) -> None:
        self.n, self.seed = len(labels), seed
        counts = np.bincount(labels)
        self.summary = {
            "strategy": "none",
            "epoch_size": self.n,
            "per_class_expected": counts.astype(float).tolist(),
        }

    def indices(self, epoch: int) -> np.ndarray:
        return _rng(self.seed, epoch).permutation(self.n)


class OversampleSampler:
    """Draws with replacement, each image weighted 1/n_c, so every class is equally likely
    (torch's WeightedRandomSampler, as index arrays)."""

    def __init__(self, labels: np.ndarray, seed: int, epoch_size: int | None) -> None:
        counts = np.bincount(labels)
        weights = 1.0 / counts[labels]
        self.p = weights / weights.sum()
        self.size = int(epoch_size) if epoch_size else len(labels)
        self.seed = seed
        present = counts > 0
        expected = np.where(present, self.size / present.sum(), 0.0)
        self.summary = {
            "strategy": "oversample",
            "epoch_size": self.size,
            "per_class_expected": expected.tolist(),
        }

    def indices(self, epoch: int) -> np.ndarray:
        return _rng(self.seed, epoch).choice(len(self.p), size=self.size, replace=True, p=self.p)


class UndersampleSampler:
    """Keeps every image of the smallest class; each larger class is drawn without
    replacement down to round(ratio * smallest count), a new draw every epoch."""

    def __init__(self, labels: np.ndarray, seed: int, ratio: float) -> None:
        counts = np.bincount(labels)
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            raise ConfigError(f"sampler 'undersample': class {int(empty[0])} has 0 training images")
        cap = int(round(ratio * counts.min()))
        self.targets = np.minimum(counts, cap)
        self.by_class = [np.flatnonzero(labels == c) for c in range(len(counts))]
        self.seed = seed
        self.summary = {
            "strategy": "undersample",
            "ratio": ratio,
            "epoch_size": int(self.targets.sum()),
            "per_class_expected": self.targets.astype(float).tolist(),
        }

    def indices(self, epoch: int) -> np.ndarray:
        rng = _rng(self.seed, epoch)
        picked = [
            rng.choice(idx, size=t, replace=False) for idx, t in zip(self.by_class, self.targets, strict=True)
        ]
        return rng.permutation(np.concatenate(picked))


SAMPLERS.add(
    "none",
    SamplerSpec(
        "none",
        "Every training image once per epoch, shuffled.",
        {},
        lambda lab, p, s: PermutationSampler(lab, s),
    ),
)
SAMPLERS.add(
    "oversample",
    SamplerSpec(
        "oversample",
        "Weighted random sampling with replacement (weight 1/n_c per image): every class is "
        "equally likely in each batch; minority images repeat within an epoch.",
        {
            "epoch_size": ParamSpec(
                "int", None, 1, None, help="images per epoch (default: the training set size)"
            )
        },
        lambda lab, p, s: OversampleSampler(lab, s, p["epoch_size"]),
    ),
)
SAMPLERS.add(
    "undersample",
    SamplerSpec(
        "undersample",
        "Keeps all of the smallest class and draws each larger class down to ratio x its "
        "count, anew each epoch (as the CoronaHack notebook did by hand).",
        {"ratio": ParamSpec("float", 1.0, 1.0, 1000.0, help="majority images per minority image")},
        lambda lab, p, s: UndersampleSampler(lab, s, p["ratio"]),
    ),
)
