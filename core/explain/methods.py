"""The CAM method registry: one entry per explanation method, each documented with its
formula (as torch-cam documents them) and computed through pytorch-grad-cam's ``BaseCAM``.

Every ``compute(model, x, target_layers, target, **opts)`` takes a (1, C, S, S) input, the
target layer modules and a :class:`LogitTarget`, and returns an (S, S) float32 map in
[0, 1] (the library's min-max scaling, after a ReLU). Several target layers (DRENet's five
FPN levels) give one map per layer, each upsampled to the input and min-max scaled, then
averaged: pytorch-grad-cam's own aggregation.

Notation: ``A_k`` is channel k of the target layer's activation, ``y_c`` the score of the
target class (its logit; a single-logit model's logit, negated for class 0), ``Z`` the
number of positions of ``A_k``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from core.errors import ConfigError
from core.registry import Registry

ComputeFn = Callable[..., np.ndarray]


@dataclass(frozen=True)
class LogitTarget:
    """The score to explain: the logit of class ``index``.

    A single-logit (BCE) model has one output, the logit of class 1; class 0 is explained
    with the negated logit (pytorch-grad-cam's ``ClassifierOutputTarget(0)`` would read the
    right output only by accident, and ``ClassifierOutputTarget(1)`` is out of range).
    Works on one sample's output ``(n,)`` and on a batch ``(B, n)``.
    """

    index: int
    single_logit: bool = False

    def __post_init__(self) -> None:
        if self.index < 0 or (self.single_logit and self.index > 1):
            raise ConfigError(f"target class {self.index} does not exist for this model")

    @property
    def category(self) -> int:  # the attribute pytorch-grad-cam's targets carry
        return self.index

    @property
    def sign(self) -> float:
        return -1.0 if self.single_logit and self.index == 0 else 1.0

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        if self.single_logit:
            return self.sign * output[..., 0]
        return output[..., self.index]

    def probability(self, logits: torch.Tensor) -> torch.Tensor:
        """The target class's probability for a batch of logits ``(B, n)``."""
        logits = logits.float()
        if self.single_logit:
            return torch.sigmoid(self.sign * logits[:, 0])
        return logits.softmax(dim=1)[:, self.index]


@dataclass(frozen=True)
class CamMethod:
    name: str
    label: str
    family: str
    needs_gradients: bool
    description: str
    cost: str
    compute: ComputeFn
    hidden: bool = False  # kept out of the page's list (the library's Score-CAM, for benchmarks)


METHODS: Registry[CamMethod] = Registry("CAM method")


def register_method(
    name: str,
    *,
    label: str,
    family: str,
    needs_gradients: bool,
    description: str,
    cost: str,
    hidden: bool = False,
) -> Callable[[ComputeFn], ComputeFn]:
    def wrap(fn: ComputeFn) -> ComputeFn:
        METHODS.add(name, CamMethod(name, label, family, needs_gradients, description, cost, fn, hidden))
        return fn

    return wrap


def get_method(name: str) -> CamMethod:
    return METHODS.get(name)


def list_methods(include_hidden: bool = False) -> list[str]:
    return [n for n, m in METHODS.items() if include_hidden or not m.hidden]


# ---------------------------------------------------------------- running a BaseCAM safely


@contextmanager
def _gradients_from(layers: Sequence[nn.Module]) -> Iterator[None]:
    """Make each target layer's output a fresh leaf of the autograd graph, so the backward
    pass stops there: the layers before it never record a graph worth walking and their
    weights get no gradients. The gradient with respect to the layer's output is unchanged.
    Registered before pytorch-grad-cam's hooks, so those see (and hook) the new tensor; the
    ``clone`` lets the model add to it in place, as torchvision blocks do."""

    def hook(module: nn.Module, args: Any, output: Any) -> Any:
        if isinstance(output, torch.Tensor):
            return output.detach().requires_grad_(True).clone()
        return None

    handles = [layer.register_forward_hook(hook) for layer in layers]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def run_base_cam(cam: Any, x: torch.Tensor, target: LogitTarget, needs_gradients: bool) -> np.ndarray:
    """Call a constructed pytorch-grad-cam object and always release its hooks.

    Not ``with cam:``: the library's ``__exit__`` swallows an ``IndexError`` (it prints it
    and returns None), which would hide a bad class index as an empty result."""
    try:
        with torch.inference_mode(False):
            if needs_gradients:
                with torch.enable_grad():
                    out = cam(x.detach(), [target])
            else:
                with torch.no_grad():
                    out = cam(x, [target])
    finally:
        cam.activations_and_grads.release()
        if needs_gradients:
            cam.model.zero_grad(set_to_none=True)
    return finish_map(out[0])


def _min_max(cam: np.ndarray) -> np.ndarray:
    low, high = float(cam.min()), float(cam.max())
    return (cam - low) / (high - low) if high > low else np.zeros_like(cam)


def finish_map(cam: np.ndarray) -> np.ndarray:
    """float32, finite, in [0, 1] (a blank map stays all zeros)."""
    cam = np.nan_to_num(np.asarray(cam, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(cam, 0.0, 1.0)


def load_library() -> None:
    """Import pytorch-grad-cam now (1.5-3 s the first time: it pulls in OpenCV and more),
    so that a timed map does not include it: callers that time methods load it first."""
    import pytorch_grad_cam  # noqa: F401


def _library(cls_name: str, needs_gradients: bool, **init: Any) -> ComputeFn:
    def compute(
        model: nn.Module,
        x: torch.Tensor,
        target_layers: Sequence[nn.Module],
        target: LogitTarget,
        **opts: Any,
    ) -> np.ndarray:
        import pytorch_grad_cam

        layers = list(target_layers)
        cls = getattr(pytorch_grad_cam, cls_name)
        if needs_gradients and len(layers) > 1:
            # pytorch-grad-cam pairs each layer's gradient with its activation by the order
            # of the backward hooks, which is the reverse of the forward order only for a
            # chain; an FPN's top-down pathway breaks it (DRENet's levels got each other's
            # gradients). One pass per layer pairs them for sure; the maps are then
            # aggregated as the library does (mean of the per-layer scaled maps, rescaled).
            maps = [compute(model, x, [layer], target, **opts) for layer in layers]
            return finish_map(_min_max(np.mean(maps, axis=0)))
        if needs_gradients:
            with _gradients_from(layers):
                return run_base_cam(cls(model, layers, **init), x, target, True)
        return run_base_cam(cls(model, layers, **init), x, target, needs_gradients)

    return compute


# ---------------------------------------------------------------- classic CAM


def classic_cam_classifier(model: nn.Module, arch: str) -> nn.Linear:
    """The linear layer whose weight rows classic CAM uses, or a clear error where the head
    is not global-average-pool + one linear layer."""
    from models import get_arch, get_submodule

    spec = get_arch(arch)
    if not spec.classic_cam:
        raise ConfigError(
            f"classic CAM needs a global-average-pool + linear head; {arch} has {spec.description}; use Grad-CAM"
        )
    layer = get_submodule(model, spec.classifier)
    if not isinstance(layer, nn.Linear):
        raise ConfigError(
            f"classic CAM: {arch}'s classifier {spec.classifier} is a {type(layer).__name__}, not Linear"
        )
    return layer


def _classic_cam_class() -> type:
    from pytorch_grad_cam.base_cam import BaseCAM

    class ClassicCAM(BaseCAM):
        """Zhou et al. 2016: the classifier's weight row for the target class over the
        feature map it pools. No backward pass."""

        def __init__(self, model: nn.Module, target_layers: list[nn.Module], classifier: nn.Linear) -> None:
            super().__init__(model, target_layers, uses_gradients=False)
            self.classifier = classifier

        def get_cam_weights(self, input_tensor, target_layer, targets, activations, grads):  # noqa: ANN001
            weight = self.classifier.weight.detach().float().cpu().numpy()
            if activations.shape[1] != weight.shape[1]:
                raise ConfigError(
                    f"classic CAM: the target layer has {activations.shape[1]} channels but the classifier takes "
                    f"{weight.shape[1]}; use the architecture's default layer (the one it pools) or Grad-CAM"
                )
            rows = [t.sign * weight[0 if t.single_logit else t.index] for t in targets]
            return np.stack(rows).astype(np.float32)

    return ClassicCAM


@register_method(
    "cam",
    label="CAM",
    family="classifier weights",
    needs_gradients=False,
    cost="one forward pass",
    description="Class activation map (Zhou et al. 2016): L = ReLU(sum_k w_k^c A_k), w^c the classifier's "
    "weight row for class c. Only for global-average-pool + linear heads, on the feature map the head pools.",
)
def _classic_cam(
    model: nn.Module,
    x: torch.Tensor,
    target_layers: Sequence[nn.Module],
    target: LogitTarget,
    *,
    arch: str | None = None,
    classifier: nn.Linear | None = None,
    **opts: Any,
) -> np.ndarray:
    if classifier is None:
        if arch is None:
            raise ConfigError("classic CAM needs the architecture name to find its classifier")
        classifier = classic_cam_classifier(model, arch)
    return run_base_cam(_classic_cam_class()(model, list(target_layers), classifier), x, target, False)


# ---------------------------------------------------------------- pytorch-grad-cam's methods

_GRAD = "gradient"
for _name, _label, _cls, _desc in (
    (
        "gradcam",
        "Grad-CAM",
        "GradCAM",
        "Selvaraju et al. 2017: L = ReLU(sum_k w_k A_k), w_k = (1/Z) sum_ij dy_c/dA_k(i,j).",
    ),
    (
        "gradcam++",
        "Grad-CAM++",
        "GradCAMPlusPlus",
        "Chattopadhay et al. 2018: w_k = sum_ij a_k(i,j) ReLU(dy_c/dA_k(i,j)), a_k = g^2 / (2 g^2 + sum_ij A_k g^3), "
        "g = dy_c/dA_k: weights positive gradients by their share, so several instances show up.",
    ),
    (
        "xgradcam",
        "XGrad-CAM",
        "XGradCAM",
        "Fu et al. 2020: w_k = sum_ij (A_k(i,j) / sum_mn A_k(m,n)) dy_c/dA_k(i,j), gradients weighted by activation.",
    ),
    (
        "layercam",
        "Layer-CAM",
        "LayerCAM",
        "Jiang et al. 2021: L = ReLU(sum_k ReLU(dy_c/dA_k) * A_k), element-wise, so shallower layers give fine maps.",
    ),
    (
        "hirescam",
        "HiRes-CAM",
        "HiResCAM",
        "Draelos & Carin 2020: L = ReLU(sum_k dy_c/dA_k * A_k), element-wise, without averaging gradients: "
        "provably shows the locations that raise the score.",
    ),
):
    register_method(
        _name,
        label=_label,
        family=_GRAD,
        needs_gradients=True,
        description=_desc,
        cost="one forward and one backward pass",
    )(_library(_cls, True))

register_method(
    "eigencam",
    label="Eigen-CAM",
    family="activation (class-agnostic)",
    needs_gradients=False,
    cost="one forward pass",
    description="Muhammad & Yeasin 2020: L = A V_1, the projection of the activations on their first principal "
    "component. Ignores the target class: it shows what the layer responds to most.",
)(_library("EigenCAM", False))


@register_method(
    "ablationcam",
    label="Ablation-CAM",
    family="perturbation",
    needs_gradients=False,
    cost="one forward pass per channel of the target layer",
    description="Desai & Ramaswamy 2020: w_k = (y_c - y_c(A_k = 0)) / y_c, the relative drop of the score when "
    "channel k is zeroed.",
)
def _ablation_cam(
    model: nn.Module,
    x: torch.Tensor,
    target_layers: Sequence[nn.Module],
    target: LogitTarget,
    *,
    batch_size: int = 32,
    **opts: Any,
) -> np.ndarray:
    from pytorch_grad_cam import AblationCAM
    from pytorch_grad_cam.ablation_layer import AblationLayer
    from pytorch_grad_cam.utils.find_layers import replace_layer_recursive

    layers = list(target_layers)
    ablation = AblationLayer()
    try:
        return run_base_cam(
            AblationCAM(model, layers, ablation_layer=ablation, batch_size=batch_size), x, target, False
        )
    finally:
        # The library swaps the target layer for its ablation layer while it works and swaps
        # it back only when nothing went wrong; the model is shared, so put it back here.
        if any(m is ablation for m in model.modules()):
            for layer in layers:
                replace_layer_recursive(model, ablation, layer)


@register_method(
    "scorecam",
    label="Score-CAM",
    family="perturbation",
    needs_gradients=False,
    cost="one forward pass per scored channel (all, or the top k in fast mode)",
    description="Wang et al. 2020: w = softmax_k(y_c(X * s(Up(A_k)))), s a min-max normalisation: each channel's "
    "upsampled map masks the input and the masked score weighs the channel. Batched, in the run's precision; "
    "fast mode scores k channels and predicts the rest with a surrogate.",
)
def _score_cam(
    model: nn.Module, x: torch.Tensor, target_layers: Sequence[nn.Module], target: LogitTarget, **opts: Any
) -> np.ndarray:
    from core.explain.scorecam import score_cam

    known = {"top_k", "criterion", "strategy", "precision", "batch_size"}
    return score_cam(model, x, target_layers, target, **{k: v for k, v in opts.items() if k in known})


register_method(
    "scorecam_lib",
    label="Score-CAM (pytorch-grad-cam)",
    family="perturbation",
    needs_gradients=False,
    cost="one forward pass per channel, 16 at a time, in fp32",
    description="pytorch-grad-cam's ScoreCAM at its defaults: the reference our Score-CAM is checked against.",
    hidden=True,
)(_library("ScoreCAM", False))


__all__ = [
    "METHODS",
    "CamMethod",
    "LogitTarget",
    "classic_cam_classifier",
    "finish_map",
    "get_method",
    "list_methods",
    "register_method",
    "run_base_cam",
]
