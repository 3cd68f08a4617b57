"""The architecture registry: name -> how to build it, where its CAM target layers are,
and whether classic CAM (GAP + one linear layer) applies.

``models`` sits below ``core`` and must not import it, so this is the same small pattern as
``core.registry.Registry`` written out for one kind: a dict, a decorator, ``get_arch`` and
``list_archs``. Keys are lowercase and stable because run JSON stores them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import nn

from models.pretrained import load_pretrained

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum

Factory = Callable[[int, int], nn.Module]


class UnknownArchError(ValueError):
    """An architecture name that is not registered; the message lists the valid ones."""


@dataclass(frozen=True)
class ArchSpec:
    """One architecture.

    ``factory(n_classes, in_channels)`` returns a randomly initialised model; ``build`` adds
    pretrained weights. ``first_conv`` is the stem, adapted when a checkpoint's input
    channels differ. ``head`` (module name prefixes) is the task-specific part on top of
    the ImageNet body: left fresh when a checkpoint lacks it or its class count differs, and
    the part that trains while the backbone is frozen. An ImageNet checkpoint's keys are
    prefixed with ``weights_prefix`` (DRENet's ResNet body).
    """

    name: str
    factory: Factory
    target_layers: tuple[str, ...]
    classic_cam: bool
    classifier: str
    family: str
    description: str
    first_conv: str
    head: tuple[str, ...]
    imagenet_weights: WeightsEnum | None = None
    weights_prefix: str = ""
    key_fix: Callable[[dict], dict] | None = None

    def build(self, n_classes: int, in_channels: int = 1, pretrained: str | None = None) -> nn.Module:
        if n_classes < 1:
            raise ValueError(f"n_classes must be >= 1, got {n_classes}")
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
        model = self.factory(n_classes, in_channels)
        if pretrained is not None and str(pretrained).lower() != "none":
            load_pretrained(model, self, str(pretrained))
        return model


_ARCHS: dict[str, ArchSpec] = {}


def register_arch(
    name: str,
    *,
    target_layers: tuple[str, ...],
    classic_cam: bool,
    classifier: str,
    family: str,
    description: str,
    first_conv: str,
    head: tuple[str, ...],
    imagenet_weights: WeightsEnum | None = None,
    weights_prefix: str = "",
    key_fix: Callable[[dict], dict] | None = None,
) -> Callable[[Factory], Factory]:
    if not name or name != name.lower():
        raise ValueError(f"architecture names are lowercase and non-empty, got {name!r}")
    if classic_cam != bool(classifier):
        raise ValueError(f"{name}: classic_cam needs a classifier name, and only then")

    def wrap(factory: Factory) -> Factory:
        if name in _ARCHS:
            raise ValueError(f"duplicate architecture {name!r}")
        _ARCHS[name] = ArchSpec(
            name=name,
            factory=factory,
            target_layers=tuple(target_layers),
            classic_cam=classic_cam,
            classifier=classifier,
            family=family,
            description=description,
            first_conv=first_conv,
            head=tuple(head),
            imagenet_weights=imagenet_weights,
            weights_prefix=weights_prefix,
            key_fix=key_fix,
        )
        return factory

    return wrap


def get_arch(name: str) -> ArchSpec:
    try:
        return _ARCHS[name]
    except KeyError:
        valid = ", ".join(_ARCHS) or "(none registered)"
        raise UnknownArchError(f"unknown architecture {name!r}; valid: {valid}") from None


def list_archs() -> list[str]:
    return list(_ARCHS)


def build_model(name: str, n_classes: int, in_channels: int = 1, pretrained: str | None = None) -> nn.Module:
    """``pretrained``: None or "none" (random init), "imagenet" (torch hub cache, downloaded
    there when a network is reachable), or the path of a state_dict file."""
    return get_arch(name).build(n_classes, in_channels, pretrained)


def get_submodule(model: nn.Module, dotted: str) -> nn.Module:
    """The module at a dotted name (``"layer4"``, ``"levels.0"``); the error names the
    model's top-level children when the name is wrong."""
    try:
        return model.get_submodule(dotted)
    except AttributeError:
        children = ", ".join(name for name, _ in model.named_children())
        raise ValueError(f"{type(model).__name__} has no module {dotted!r}; top level: {children}") from None
