"""Architectures: ``build_model(name, n_classes, in_channels, pretrained)`` and the
registry that says, per architecture, where its CAM target layers are and whether classic
CAM applies. Never imports ``core`` or streamlit (imports go pages -> core -> models)."""

from models import drenet as _drenet  # noqa: F401  (registers drenet)
from models import torchvision_archs as _torchvision_archs  # noqa: F401  (registers the rest)
from models.pretrained import (
    PretrainedStatus,
    PretrainedWeightsUnavailable,
    WeightsFileError,
    check_pretrained,
    load_pretrained,
    pretrained_status,
)
from models.registry import (
    ArchSpec,
    UnknownArchError,
    build_model,
    get_arch,
    get_submodule,
    list_archs,
    register_arch,
)

__all__ = [
    "ArchSpec",
    "PretrainedStatus",
    "PretrainedWeightsUnavailable",
    "UnknownArchError",
    "WeightsFileError",
    "build_model",
    "check_pretrained",
    "get_arch",
    "get_submodule",
    "list_archs",
    "load_pretrained",
    "pretrained_status",
    "register_arch",
]
