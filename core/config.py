"""RunConfig: the one object that carries a run's configuration.

The Train page's form and the CLI build it, the store saves it as JSON, the worker passes
it to the training process, the run folder keeps a copy. ``from_json`` rejects unknown keys;
``__post_init__`` checks names against the registries and numbers against their ranges.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from core.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
FREEZE_POLICIES = ("none", "backbone", "epochs")
NORMALIZATIONS = ("imagenet", "dataset")
MONITORS = ("auc", "balanced_accuracy", "f1", "accuracy", "loss", "pr_auc")


@dataclass(frozen=True)
class RunConfig:
    # what to train on
    data: str = ""
    format: str = "auto"
    format_options: Mapping[str, Any] = field(default_factory=dict)
    task: Mapping[str, Any] = field(default_factory=dict)  # core.data.tasks.Task.to_dict()
    task_name: str = ""
    # the model
    arch: str = "resnet18"
    # "imagenet" (the torch hub cache, downloaded on first use), "none" (from scratch: only
    # when asked for), or a path to a state_dict file
    pretrained: str = "imagenet"
    in_channels: int = 1
    img_size: int = 224
    # class imbalance
    loss: str = "weighted_ce"
    loss_params: Mapping[str, Any] = field(default_factory=dict)
    sampler: str = "none"
    sampler_params: Mapping[str, Any] = field(default_factory=dict)
    # optimisation
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    nesterov: bool = False
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    step_size: int = 10
    gamma: float = 0.1
    epochs: int = 10
    batch_size: int = 32
    grad_clip: float = 0.0  # 0 = off
    freeze: str = "none"
    freeze_epochs: int = 0
    augment: str = "light"
    normalize: str = "imagenet"
    early_stopping: int = 0  # patience in epochs, 0 = off
    monitor: str = "auc"  # val metric that picks the best checkpoint
    # execution
    precision: str = "auto"
    device: str = "auto"
    seed: int = 0
    # bookkeeping
    name: str = ""
    tags: tuple[str, ...] = ()
    allow_leakage: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "tags", tuple(str(t) for t in self.tags))
        for key in ("format_options", "task", "loss_params", "sampler_params"):
            value = getattr(self, key)
            if not isinstance(value, Mapping):
                raise ConfigError(f"{key} must be a JSON object, got {type(value).__name__}")
            object.__setattr__(self, key, dict(value))
        if self.data and not os.path.isabs(self.data):
            object.__setattr__(self, "data", os.path.abspath(self.data))
        self._check_ranges()
        self._check_names()

    def _check_ranges(self) -> None:
        def need(cond: bool, what: str) -> None:
            if not cond:
                raise ConfigError(what)

        need(self.in_channels in (1, 3), f"in_channels must be 1 or 3, got {self.in_channels}")
        need(32 <= self.img_size <= 1024, f"img_size must be between 32 and 1024, got {self.img_size}")
        need(0 < self.lr <= 10, f"lr must be in (0, 10], got {self.lr}")
        need(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        need(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}")
        need(1 <= self.epochs <= 10_000, f"epochs must be between 1 and 10000, got {self.epochs}")
        need(1 <= self.batch_size <= 4096, f"batch_size must be between 1 and 4096, got {self.batch_size}")
        need(self.grad_clip >= 0, f"grad_clip must be >= 0, got {self.grad_clip}")
        need(0 <= self.warmup_epochs < self.epochs + 1, f"warmup_epochs must be in [0, epochs], got {self.warmup_epochs}")
        need(self.step_size >= 1, f"step_size must be >= 1, got {self.step_size}")
        need(0 < self.gamma <= 1, f"gamma must be in (0, 1], got {self.gamma}")
        need(self.freeze in FREEZE_POLICIES, f"freeze {self.freeze!r} unknown; valid: {', '.join(FREEZE_POLICIES)}")
        need(self.freeze_epochs >= 0, f"freeze_epochs must be >= 0, got {self.freeze_epochs}")
        need(self.normalize in NORMALIZATIONS, f"normalize {self.normalize!r} unknown; valid: {', '.join(NORMALIZATIONS)}")
        need(self.early_stopping >= 0, f"early_stopping must be >= 0, got {self.early_stopping}")
        need(self.monitor in MONITORS, f"monitor {self.monitor!r} unknown; valid: {', '.join(MONITORS)}")
        need(self.precision in PRECISIONS, f"precision {self.precision!r} unknown; valid: {', '.join(PRECISIONS)}")
        need(self.seed >= 0, f"seed must be >= 0, got {self.seed}")
        _check_device(self.device)

    def _check_names(self) -> None:
        from core.train import augment, losses, optim, samplers
        from models import get_arch

        try:
            get_arch(self.arch)
        except ValueError as exc:
            raise ConfigError(f"arch: {exc}") from None
        for kind, getter, name in (
            ("loss", losses.get_loss, self.loss),
            ("sampler", samplers.get_sampler, self.sampler),
            ("optimizer", optim.get_optimizer, self.optimizer),
            ("schedule", optim.get_schedule, self.schedule),
            ("augment", augment.get_augment, self.augment),
        ):
            try:
                getter(name)
            except ValueError as exc:
                raise ConfigError(f"{kind}: {exc}") from None

    # -- JSON ---------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tags"] = list(self.tags)
        return d

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunConfig:
        if not isinstance(d, Mapping):
            raise ConfigError(f"a run config is a JSON object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"run config: unknown field(s) {', '.join(unknown)}")
        d = dict(d)
        if "tags" in d:
            d["tags"] = tuple(d["tags"])
        for f in fields(cls):
            if f.name in d and f.type in ("int", "float", "bool"):
                d[f.name] = _coerce(f.name, f.type, d[f.name])
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"run config is not valid JSON: {exc}") from None

    def replace(self, **changes: Any) -> RunConfig:
        return replace(self, **changes)

    @property
    def display_name(self) -> str:
        return self.name or f"{self.arch}-{self.loss}" + (f"-{self.sampler}" if self.sampler != "none" else "")


def _coerce(name: str, type_name: str, value: Any) -> Any:
    try:
        if type_name == "bool":
            if isinstance(value, bool):
                return value
            raise TypeError
        if type_name == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if isinstance(value, bool):
            raise TypeError
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be {type_name}, got {value!r}") from None


def _check_device(device: str) -> None:
    if device in ("auto", "cpu", "cuda", "mps"):
        return
    if device.startswith("cuda:") and device[5:].isdigit():
        return
    raise ConfigError(f"device {device!r} unknown; valid: auto, cpu, cuda, cuda:N")
