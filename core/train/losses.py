"""Class-imbalance strategies that act through the loss (registry "loss").

Each entry builds a criterion from the training split's class counts (in class-index
order) and reports the weights it actually uses, so a run records them. The sampling
strategies (oversample, undersample) live in ``core.train.samplers`` and combine freely
with any of these.

``ParamSpec`` and ``validate_params`` are shared with the samplers: one description of a
strategy's knobs builds the Train form, the CLI flags and the validation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ConfigError
from core.registry import Registry

# ---------------------------------------------------------------------------------------
# Parameters


@dataclass(frozen=True)
class ParamSpec:
    """One knob of a strategy. ``choices`` on a float/floats kind lists the strings that are
    accepted besides numbers (``"auto"``, ``"none"``)."""

    kind: str  # "float" | "int" | "choice" | "floats"
    default: Any
    min: float | None = None
    max: float | None = None
    choices: tuple[Any, ...] | None = None
    help: str = ""
    exclusive_min: bool = False  # e.g. pos_weight > 0


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _check_range(owner: str, key: str, value: float, spec: ParamSpec) -> None:
    low_bad = spec.min is not None and (value <= spec.min if spec.exclusive_min else value < spec.min)
    high_bad = spec.max is not None and value > spec.max
    if low_bad or high_bad or not math.isfinite(value):
        lo = "(" if spec.exclusive_min else "["
        raise ConfigError(f"{owner}: parameter {key!r} = {value!r} is outside {lo}{spec.min}, {spec.max}]")


def _validate_one(owner: str, key: str, value: Any, spec: ParamSpec) -> Any:
    if value is None and spec.default is None:
        return None
    if spec.choices is not None and isinstance(value, str):
        if value in spec.choices:
            return value
        raise ConfigError(f"{owner}: parameter {key!r} = {value!r} is not one of {list(spec.choices)}")
    if spec.kind == "choice":
        raise ConfigError(f"{owner}: parameter {key!r} = {value!r} is not one of {list(spec.choices or ())}")
    if spec.kind == "int":
        if not (_is_number(value) and float(value).is_integer()):
            raise ConfigError(f"{owner}: parameter {key!r} must be an integer, got {value!r}")
        _check_range(owner, key, float(value), spec)
        return int(value)
    if spec.kind == "float":
        if not _is_number(value):
            raise ConfigError(f"{owner}: parameter {key!r} must be a number, got {value!r}")
        _check_range(owner, key, float(value), spec)
        return float(value)
    if spec.kind == "floats":
        if not isinstance(value, list | tuple) or not all(_is_number(v) for v in value):
            raise ConfigError(f"{owner}: parameter {key!r} must be a list of numbers, got {value!r}")
        for v in value:
            _check_range(owner, key, float(v), spec)
        return [float(v) for v in value]
    raise ValueError(f"unknown ParamSpec kind {spec.kind!r}")


def validate_params(
    owner: str, specs: Mapping[str, ParamSpec], params: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Checks ``params`` against ``specs`` and fills defaults; ``owner`` prefixes errors
    (e.g. ``"loss 'focal'"``)."""
    params = dict(params or {})
    unknown = sorted(set(params) - set(specs))
    if unknown:
        valid = ", ".join(specs) or "(none)"
        raise ConfigError(f"{owner} has no parameter {unknown[0]!r}; valid: {valid}")
    return {
        key: _validate_one(owner, key, params.get(key, spec.default), spec) for key, spec in specs.items()
    }


# ---------------------------------------------------------------------------------------
# Registry


@dataclass
class BuiltLoss:
    criterion: nn.Module  # criterion(logits, targets); move it with .to(device) (weights are buffers)
    weights_used: dict[str, Any]  # JSON-able; "class_weights" is always present (list or None)


BuildLossFn = Callable[[Sequence[int], Mapping[str, Any]], BuiltLoss]


@dataclass(frozen=True)
class LossSpec:
    name: str
    description: str
    params: dict[str, ParamSpec]
    single_logit: bool  # the model has ONE output; the task must have exactly 2 classes
    build: BuildLossFn


LOSSES: Registry[LossSpec] = Registry("loss")


def get_loss(name: str) -> LossSpec:
    return LOSSES.get(name)


def list_losses() -> list[str]:
    return LOSSES.names()


def build_loss(name: str, class_counts: Sequence[int], params: Mapping[str, Any] | None = None) -> BuiltLoss:
    spec = get_loss(name)
    full = validate_params(f"loss {name!r}", spec.params, params)
    counts = _check_counts(class_counts)
    return spec.build(counts, full)


def class_weights(
    name: str, class_counts: Sequence[int], params: Mapping[str, Any] | None = None
) -> list[float] | None:
    """The per-class weights the strategy will use (for the Train form's preview), or None."""
    return build_loss(name, class_counts, params).weights_used["class_weights"]


def _check_counts(class_counts: Sequence[int]) -> list[int]:
    counts = [int(c) for c in class_counts]
    if len(counts) < 2:
        raise ConfigError(f"a classifier needs at least 2 classes, got class counts {counts}")
    for i, c in enumerate(counts):
        if c <= 0:
            raise ConfigError(f"class {i} has {c} training images; every class needs at least one")
    return counts


# ---------------------------------------------------------------------------------------
# Weights


def inverse_frequency(counts: Sequence[int]) -> list[float]:
    """w_c = n / (k * n_c): the expected weight of a training image is 1."""
    n, k = sum(counts), len(counts)
    return [n / (k * c) for c in counts]


def effective_number_weights(counts: Sequence[int], beta: float) -> list[float]:
    """Cui et al. 2019: w_c ∝ (1 - beta) / (1 - beta^n_c), normalised so sum(w) = k."""
    raw = [(1.0 - beta) / (1.0 - beta**c) for c in counts]
    scale = len(counts) / sum(raw)
    return [w * scale for w in raw]


# ---------------------------------------------------------------------------------------
# Criteria torch does not have


class SingleLogitBCE(nn.Module):
    """BCE-with-logits on one output; targets are class indices (1 = positive)."""

    def __init__(self, pos_weight: float) -> None:
        super().__init__()
        self.loss = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([pos_weight]))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if logits.dim() == 2:
            if logits.shape[1] != 1:
                raise ValueError(f"bce expects one logit per image, got shape {tuple(logits.shape)}")
            logits = logits[:, 0]
        return self.loss(logits.float(), targets.to(torch.float32))


class FocalLoss(nn.Module):
    """Multi-class softmax focal loss (Lin et al. 2017): mean of -alpha_t (1 - p_t)^gamma log p_t.

    A plain mean over the batch (as torchvision's sigmoid_focal_loss), so gamma = 0 without
    alpha is exactly cross-entropy.
    """

    def __init__(self, gamma: float, alpha: Sequence[float] | None) -> None:
        super().__init__()
        self.gamma = gamma
        self.register_buffer(
            "alpha", None if alpha is None else torch.tensor(list(alpha), dtype=torch.float32)
        )

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(logits.float(), targets, reduction="none")
        # exp(-ce) is p_t from log-softmax, stable where softmax underflows; the clamp keeps
        # the gradient of x^gamma finite at p_t = 1 when gamma < 1
        loss = (1.0 - torch.exp(-ce)).clamp_min(1e-12).pow(self.gamma) * ce
        if self.alpha is not None:
            loss = loss * self.alpha[targets]
        return loss.mean()


# ---------------------------------------------------------------------------------------
# Entries

_SMOOTHING = ParamSpec("float", 0.0, 0.0, 0.5, help="label smoothing (0 = off)")


def _build_ce(counts: Sequence[int], p: Mapping[str, Any]) -> BuiltLoss:
    crit = nn.CrossEntropyLoss(label_smoothing=p["label_smoothing"])
    return BuiltLoss(crit, {"class_weights": None, "label_smoothing": p["label_smoothing"]})


def _build_weighted_ce(counts: Sequence[int], p: Mapping[str, Any]) -> BuiltLoss:
    w = inverse_frequency(counts)
    crit = nn.CrossEntropyLoss(
        weight=torch.tensor(w, dtype=torch.float32), label_smoothing=p["label_smoothing"]
    )
    return BuiltLoss(crit, {"class_weights": w, "label_smoothing": p["label_smoothing"]})


def _build_class_balanced(counts: Sequence[int], p: Mapping[str, Any]) -> BuiltLoss:
    w = effective_number_weights(counts, p["beta"])
    crit = nn.CrossEntropyLoss(
        weight=torch.tensor(w, dtype=torch.float32), label_smoothing=p["label_smoothing"]
    )
    return BuiltLoss(crit, {"class_weights": w, "beta": p["beta"], "label_smoothing": p["label_smoothing"]})


def _build_bce(counts: Sequence[int], p: Mapping[str, Any]) -> BuiltLoss:
    if len(counts) != 2:
        raise ConfigError(
            f"loss 'bce' needs exactly 2 classes (class 1 = positive), the task has {len(counts)}"
        )
    pw = p["pos_weight"]
    pos_weight = counts[0] / counts[1] if pw == "auto" else float(pw)
    return BuiltLoss(
        SingleLogitBCE(pos_weight), {"class_weights": [1.0, pos_weight], "pos_weight": pos_weight}
    )


def _build_focal(counts: Sequence[int], p: Mapping[str, Any]) -> BuiltLoss:
    alpha = p["alpha"]
    if alpha == "none":
        alpha = None
    elif alpha == "auto":
        # inverse frequency already has mean weight 1 per image, keeping the loss's scale
        alpha = inverse_frequency(counts)
    elif len(alpha) != len(counts):
        raise ConfigError(
            f"loss 'focal': parameter 'alpha' has {len(alpha)} values, the task has {len(counts)} classes"
        )
    crit = FocalLoss(p["gamma"], alpha)
    return BuiltLoss(crit, {"class_weights": alpha, "gamma": p["gamma"], "alpha": alpha})


LOSSES.add(
    "ce",
    LossSpec(
        "ce",
        "Cross-entropy, every class weighted equally.",
        {"label_smoothing": _SMOOTHING},
        False,
        _build_ce,
    ),
)
LOSSES.add(
    "weighted_ce",
    LossSpec(
        "weighted_ce",
        "Cross-entropy with inverse-frequency class weights n / (k * n_c) from the training split: "
        "a class with a third of the images of another gets 3x its weight.",
        {"label_smoothing": _SMOOTHING},
        False,
        _build_weighted_ce,
    ),
)
LOSSES.add(
    "class_balanced",
    LossSpec(
        "class_balanced",
        "Cross-entropy weighted by the effective number of samples (Cui et al. 2019): "
        "w_c ∝ (1 - beta) / (1 - beta^n_c), normalised to sum to the number of classes. "
        "beta near 1 approaches inverse frequency; smaller beta weights more evenly.",
        {
            "beta": ParamSpec("float", 0.999, 0.9, 0.99999, help="effective-number beta"),
            "label_smoothing": _SMOOTHING,
        },
        False,
        _build_class_balanced,
    ),
)
LOSSES.add(
    "bce",
    LossSpec(
        "bce",
        "Binary cross-entropy on a single logit (two-class tasks; class 1 is positive), "
        "positives weighted by pos_weight (auto = n_negative / n_positive).",
        {
            "pos_weight": ParamSpec(
                "float", "auto", 0.0, 1000.0, ("auto",), "weight of positives: 'auto' or a number > 0", True
            )
        },
        True,
        _build_bce,
    ),
)
LOSSES.add(
    "focal",
    LossSpec(
        "focal",
        "Softmax focal loss (Lin et al. 2017): down-weights easy images by (1 - p_t)^gamma; "
        "optional per-class alpha ('auto' = inverse frequency).",
        {
            "gamma": ParamSpec("float", 2.0, 0.0, 10.0, help="focusing strength (0 = cross-entropy)"),
            "alpha": ParamSpec(
                "floats", "none", 0.0, None, ("none", "auto"), "per-class weights: 'none', 'auto' or a list"
            ),
        },
        False,
        _build_focal,
    ),
)
