"""Our Score-CAM: the same weights as pytorch-grad-cam's ``ScoreCAM``, computed fast.

Score-CAM (Wang et al. 2020) masks the input with every channel of the target layer and
scores each masked input: one forward pass per channel (512 for ResNet-18's layer4, 2048
for ResNet-50's). The library runs them 16 at a time in fp32, moving every score to the
CPU as it goes. Here, with the library's definition kept exactly (bilinear upsampling with
aligned corners, per-channel min-max with +1e-8, the target's raw logit as the score,
softmax over channels):

- the masked inputs run through a hook-free copy of the model in inference mode, with
  every BatchNorm that follows a conv folded into it (models.fold), channels_last, under
  the run's precision (bf16 autocast where the CPU or GPU has it), in batches as large as
  the available memory allows (capped; larger stops paying off);
- masks are built per batch from the low-resolution activations and scores stay on the
  device until the softmax;
- channels that are constant (all zero after a ReLU is common) give an all-zero mask, so
  they share one score, the model's score of a blank input: one forward for all of them;
- fast mode scores only ``k`` channels, spread evenly over a ranking by a cheap criterion
  (the spatial standard deviation of the activation), and predicts the others' scores with
  a ridge-regression surrogate fitted on them: a masked input's score is close to a sum of
  what each kept region of the image contributes, so a linear model of the score in the
  channel's mask (its min-max normalised activation on the coarse grid, at most 8 x 8)
  learns it from a few dozen samples. Keeping only the top-k channels and dropping the rest
  (``strategy="top"``, the obvious fast mode) agrees far worse: Score-CAM's softmax weights
  are nearly flat (scores differ by a few logits), so every channel counts. bench/cam.py
  measures both.

The map is assembled by pytorch-grad-cam's ``BaseCAM`` (ReLU, min-max, resize, averaging
over several target layers), so full mode matches the library up to numerical noise.
"""

from __future__ import annotations

import copy
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from core.errors import ConfigError
from core.explain.methods import LogitTarget, run_base_cam
from models.fold import fold_batchnorm

# Fast mode's default k: the smallest k whose maps agree with full Score-CAM at mean r >= 0.9
# on bench/cam.py's images, with margin (see its report).
DEFAULT_TOP_K = 32
CRITERIA = ("mean", "max", "std")
DEFAULT_CRITERION = "std"
STRATEGIES = ("surrogate", "top")
DEFAULT_STRATEGY = "surrogate"
SURROGATE_GRID = 8  # at most 8 x 8 cells of a channel's mask describe it to the surrogate
SURROGATE_RIDGE = 1.0
CPU_MAX_BATCH = 32  # ResNet-18, 224 px, bf16, BN folded: 32 and 64 tie (2.43 s per 512), 96+ is slower (3.2-3.3 s)
CUDA_MAX_BATCH = 256
MEMORY_SHARE = 0.25  # of MemAvailable (or free GPU memory) for one batch of masked inputs
MEMORY_CAP = 4 * 2**30


@dataclass
class InferenceModel:
    """A hook-free copy of a model for the masked forward passes, with its precision."""

    module: nn.Module
    device: torch.device
    precision: Any  # core.train.device.Precision
    folded: int = 0  # BatchNorms folded into their convs
    bytes_per_sample: dict[int, int] = field(default_factory=dict)
    seconds_per_sample: dict[int, float] = field(default_factory=dict)
    channels: dict[tuple[tuple[str, ...], int], list[int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def channels_last(self) -> bool:
        return self.device.type == "cpu" or self.precision.channels_last

    def autocast(self) -> Any:
        return self.precision.autocast(self.device)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    @torch.inference_mode()
    def scores(self, x: torch.Tensor, target: LogitTarget) -> torch.Tensor:
        with self.autocast():
            return target(self.module(self.prepare(x))).float()


_COPIES: weakref.WeakKeyDictionary[nn.Module, dict[str, InferenceModel]] = weakref.WeakKeyDictionary()
_COPIES_LOCK = threading.Lock()


def inference_model(model: nn.Module, precision: str = "auto") -> InferenceModel:
    """The cached inference copy of ``model`` for a precision ("auto", "fp32", "bf16").

    Copies are keyed by the model object: ``load_run_model`` builds a new one per
    checkpoint, so a reloaded checkpoint never meets a stale copy."""
    from core.train.device import resolve_precision

    device = next(model.parameters()).device
    prec = resolve_precision(precision, device)
    with _COPIES_LOCK:
        per_model = _COPIES.setdefault(model, {})
        if prec.name not in per_model:
            clone = copy.deepcopy(model).eval()
            for m in clone.modules():  # hooks of a CAM running on the original are not wanted
                m._forward_hooks.clear()
                m._forward_pre_hooks.clear()
                m._backward_hooks.clear()
            for p in clone.parameters():
                p.requires_grad_(False)
            inf = InferenceModel(clone, device, prec, folded=fold_batchnorm(clone))
            if inf.channels_last:
                clone.to(memory_format=torch.channels_last)
            per_model[prec.name] = inf
        return per_model[prec.name]


# ---------------------------------------------------------------- memory and batch size


def memory_available(device: torch.device) -> int:
    """Bytes free for work: free GPU memory, or the kernel's MemAvailable (2 GiB if unknown)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 2 * 2**30


def _bytes_per_sample(inf: InferenceModel, x: torch.Tensor) -> int:
    """Sum of every leaf module's output for one sample: an upper bound on what a forward
    pass holds at once in inference mode, where each output is freed after its use."""
    size = int(x.shape[-1])
    if size not in inf.bytes_per_sample:
        total = [x.numel() * 4]

        def count(module: nn.Module, args: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor):
                total.append(output.numel() * output.element_size())

        handles = [m.register_forward_hook(count) for m in inf.module.modules() if not list(m.children())]
        try:
            inf.scores(torch.zeros_like(x[:1]), LogitTarget(0))
        finally:
            for h in handles:
                h.remove()
        inf.bytes_per_sample[size] = int(sum(total))
    return inf.bytes_per_sample[size]


def choose_batch(inf: InferenceModel, x: torch.Tensor, n: int) -> int:
    budget = min(MEMORY_SHARE * memory_available(inf.device), MEMORY_CAP)
    cap = CUDA_MAX_BATCH if inf.device.type == "cuda" else CPU_MAX_BATCH
    return int(max(1, min(n, cap, budget // max(1, _bytes_per_sample(inf, x)))))


# ---------------------------------------------------------------- weights


def rank_channels(activation: torch.Tensor, criterion: str = DEFAULT_CRITERION) -> torch.Tensor:
    """Channel indices of a (C, h, w) activation, most promising first."""
    if criterion == "mean":
        key = activation.mean(dim=(1, 2))
    elif criterion == "max":
        key = activation.amax(dim=(1, 2))
    elif criterion == "std":
        key = activation.flatten(1).std(dim=1)
    else:
        raise ConfigError(f"Score-CAM channel criterion {criterion!r} unknown; valid: {', '.join(CRITERIA)}")
    return torch.argsort(key, descending=True, stable=True)


def blank_channels(activation: torch.Tensor) -> torch.Tensor:
    """(C,) True where a (C, h, w) activation is constant: its min-max mask is zero
    everywhere, so its masked input is blank and needs no forward pass of its own."""
    flat = activation.flatten(1)
    return flat.amax(dim=1) == flat.amin(dim=1)


def masked_scores(
    inf: InferenceModel,
    x: torch.Tensor,
    activation: torch.Tensor,
    channels: torch.Tensor,
    target: LogitTarget,
    batch_size: int,
) -> torch.Tensor:
    """The target's score of ``x`` masked by each listed channel, on the device."""
    size = x.shape[-2:]
    out = torch.empty(len(channels), device=inf.device, dtype=torch.float32)
    with torch.inference_mode():
        for start in range(0, len(channels), batch_size):
            idx = channels[start : start + batch_size]
            up = F.interpolate(activation[idx][None], size=size, mode="bilinear", align_corners=True)[0]
            flat = up.flatten(1)
            lo = flat.min(dim=1).values[:, None, None]
            hi = flat.max(dim=1).values[:, None, None]
            masks = (up - lo) / (hi - lo + 1e-8)
            out[start : start + len(idx)] = inf.scores(x * masks[:, None], target)
    return out


def select_channels(
    activation: torch.Tensor,
    live: torch.Tensor,
    k: int,
    criterion: str = DEFAULT_CRITERION,
    strategy: str = DEFAULT_STRATEGY,
) -> torch.Tensor:
    """The ``k`` live channels to score: the top ``k`` by the criterion ("top"), or ``k``
    spread evenly over its ranking ("surrogate": a sample the surrogate can learn from)."""
    order = rank_channels(activation, criterion)
    keep = torch.zeros(activation.shape[0], dtype=torch.bool, device=activation.device)
    keep[live] = True
    order = order[keep[order]]
    if strategy == "top" or k >= len(order):
        return order[:k]
    return order[torch.linspace(0, len(order) - 1, k, device=order.device).round().long().unique()]


def mask_features(activation: torch.Tensor) -> torch.Tensor:
    """Each channel's mask as the surrogate sees it: the min-max normalised activation on a
    grid of at most ``SURROGATE_GRID`` squared cells, plus a constant: (C, cells + 1)."""
    grid = activation[None]
    if activation.shape[1] > SURROGATE_GRID or activation.shape[2] > SURROGATE_GRID:
        size = (min(activation.shape[1], SURROGATE_GRID), min(activation.shape[2], SURROGATE_GRID))
        grid = F.adaptive_avg_pool2d(grid, size)
    flat = grid[0].flatten(1).double()
    lo, hi = flat.amin(dim=1, keepdim=True), flat.amax(dim=1, keepdim=True)
    return torch.cat([(flat - lo) / (hi - lo + 1e-8), torch.ones_like(flat[:, :1])], dim=1)


def surrogate_scores(
    activation: torch.Tensor,
    sampled: torch.Tensor,
    sampled_scores: torch.Tensor,
    ridge: float = SURROGATE_RIDGE,
) -> torch.Tensor:
    """Every channel's score predicted from the sampled ones by ridge regression on the
    channels' masks: a masked input's score is, to a good approximation, a sum of what each
    region of the image it keeps contributes (see bench/cam.py for the measured agreement)."""
    x = mask_features(activation)
    xs, ys = x[sampled], sampled_scores.double()
    mean = ys.mean()
    eye = torch.eye(x.shape[1], dtype=torch.float64, device=x.device)
    beta = torch.linalg.solve(xs.T @ xs + ridge * eye, xs.T @ (ys - mean))
    return (x @ beta + mean).float()


def scorecam_weights(
    inf: InferenceModel,
    x: torch.Tensor,
    activation: torch.Tensor,
    target: LogitTarget,
    *,
    top_k: int | None = None,
    criterion: str = DEFAULT_CRITERION,
    strategy: str = DEFAULT_STRATEGY,
    batch_size: int | None = None,
) -> np.ndarray:
    """Score-CAM's channel weights for one image ``x`` (1, C_in, S, S) and its target-layer
    activation (C, h, w). ``top_k`` None or 0 scores every channel; otherwise ``top_k``
    channels are scored and the rest get weight 0 ("top") or a surrogate's predicted score
    ("surrogate")."""
    activation = activation.to(inf.device, torch.float32)
    blank = blank_channels(activation)
    live = torch.nonzero(~blank).flatten()
    full = not top_k or top_k >= len(live)
    scored = live if full else select_channels(activation, live, top_k, criterion, strategy)
    scores = torch.full((activation.shape[0],), float("-inf"), device=inf.device)
    if len(scored):
        batch = batch_size or choose_batch(inf, x, len(scored))
        measured = masked_scores(inf, x, activation, scored, target, batch)
        if not full and strategy == "surrogate":
            scores[live] = surrogate_scores(activation, scored, measured)[live]
        scores[scored] = measured
    if bool(blank.any()):
        # A constant channel's mask is zero everywhere: the masked input is blank.
        scores[blank] = inf.scores(torch.zeros_like(x), target)[0]
    if not torch.isfinite(scores).any():
        return np.zeros(activation.shape[0], dtype=np.float32)
    return torch.softmax(scores, dim=0).cpu().numpy().astype(np.float32)


def _fast_score_cam_class() -> type:
    from pytorch_grad_cam.base_cam import BaseCAM

    class FastScoreCAM(BaseCAM):
        def __init__(
            self,
            model: nn.Module,
            target_layers: list[nn.Module],
            inf: InferenceModel,
            options: dict[str, Any],
        ) -> None:
            super().__init__(model, target_layers, uses_gradients=False)
            self.inf, self.options = inf, options

        def get_cam_weights(self, input_tensor, target_layer, targets, activations, grads):  # noqa: ANN001
            acts = torch.from_numpy(np.asarray(activations))
            rows = [
                scorecam_weights(
                    self.inf, input_tensor[b : b + 1].to(self.inf.device), acts[b], t, **self.options
                )
                for b, t in enumerate(targets)
            ]
            return np.stack(rows)

    return FastScoreCAM


def score_cam(
    model: nn.Module,
    x: torch.Tensor,
    target_layers: Sequence[nn.Module],
    target: LogitTarget,
    *,
    top_k: int | None = None,
    criterion: str = DEFAULT_CRITERION,
    strategy: str = DEFAULT_STRATEGY,
    precision: str = "auto",
    batch_size: int | None = None,
) -> np.ndarray:
    """The Score-CAM map (S, S) in [0, 1]; ``top_k`` None or 0 scores every channel."""
    if top_k is not None and top_k < 0:
        raise ConfigError(f"Score-CAM k must be >= 0 (0 = all channels), got {top_k}")
    if criterion not in CRITERIA:
        raise ConfigError(f"Score-CAM channel criterion {criterion!r} unknown; valid: {', '.join(CRITERIA)}")
    if strategy not in STRATEGIES:
        raise ConfigError(
            f"Score-CAM fast-mode strategy {strategy!r} unknown; valid: {', '.join(STRATEGIES)}"
        )
    inf = inference_model(model, precision)  # before the CAM's hooks exist: the copy has none
    options = {"top_k": top_k or None, "criterion": criterion, "strategy": strategy, "batch_size": batch_size}
    cam = _fast_score_cam_class()(model, list(target_layers), inf, options)
    return run_base_cam(cam, x, target, False)


# ---------------------------------------------------------------- time estimate


def _first_conv_channels(model: nn.Module) -> int:
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise ConfigError(f"{type(model).__name__} has no Conv2d: Score-CAM needs a convolutional model")
    return int(conv.in_channels)


def layer_channels(
    model: nn.Module, layers: Sequence[str], img_size: int, precision: str = "auto"
) -> list[int]:
    """Channels of each named layer's output at this input size (one probe forward pass)."""
    from models import get_submodule

    inf = inference_model(model, precision)
    key = (tuple(layers), int(img_size))
    with inf.lock:
        if key not in inf.channels:
            found: dict[str, int] = {}
            handles = []
            for name in layers:

                def grab(module: nn.Module, args: Any, output: Any, name: str = name) -> None:
                    found[name] = int(output.shape[1])

                handles.append(get_submodule(inf.module, name).register_forward_hook(grab))
            try:
                x = torch.zeros(1, _first_conv_channels(model), img_size, img_size, device=inf.device)
                inf.scores(x, LogitTarget(0))
            finally:
                for h in handles:
                    h.remove()
            inf.channels[key] = [found[name] for name in layers]
        return inf.channels[key]


def seconds_per_forward(model: nn.Module, img_size: int, precision: str = "auto") -> float:
    """Measured seconds of one masked forward pass at the batch size Score-CAM would use."""
    inf = inference_model(model, precision)
    with inf.lock:
        if img_size not in inf.seconds_per_sample:
            x = torch.randn(1, _first_conv_channels(model), img_size, img_size, device=inf.device)
            n = min(16, choose_batch(inf, x, 16))
            inf.scores(x.expand(2, -1, -1, -1), LogitTarget(0))  # warm-up
            start = time.perf_counter()
            inf.scores(x.expand(n, -1, -1, -1), LogitTarget(0))
            if inf.device.type == "cuda":
                torch.cuda.synchronize(inf.device)
            inf.seconds_per_sample[img_size] = (time.perf_counter() - start) / n
        return inf.seconds_per_sample[img_size]


def estimate_seconds(
    model: nn.Module, layer: str | Sequence[str], k: int | None, img_size: int, *, precision: str = "auto"
) -> float:
    """Seconds one Score-CAM map should take: ``k`` (None or 0 = all) channels per target
    layer, plus the activation pass. An upper bound: blank channels cost nothing."""
    layers = [layer] if isinstance(layer, str) else list(layer)
    per = seconds_per_forward(model, img_size, precision)
    n = sum(min(k, c) if k else c for c in layer_channels(model, layers, img_size, precision))
    return per * (n + 4)


__all__ = [
    "CRITERIA",
    "DEFAULT_CRITERION",
    "DEFAULT_STRATEGY",
    "DEFAULT_TOP_K",
    "STRATEGIES",
    "blank_channels",
    "choose_batch",
    "estimate_seconds",
    "inference_model",
    "layer_channels",
    "masked_scores",
    "rank_channels",
    "score_cam",
    "scorecam_weights",
    "seconds_per_forward",
    "select_channels",
    "surrogate_scores",
]
