"""Our Score-CAM: the library's definition, computed faster; fast mode; blank channels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from core.errors import ConfigError
from core.explain.methods import LogitTarget, get_method
from core.explain.scorecam import (
    estimate_seconds,
    inference_model,
    layer_channels,
    score_cam,
    select_channels,
    surrogate_scores,
)
from models import build_model


def _r(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return build_model("resnet18", 3, 1).eval()


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    yy, xx = torch.meshgrid(torch.arange(48.0), torch.arange(48.0), indexing="ij")
    blob = torch.exp(-((xx - 15) ** 2 + (yy - 30) ** 2) / 40)
    return torch.randn(1, 1, 48, 48, generator=g) * 0.3 + 2 * blob


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU())
        self.features = nn.Sequential(nn.Conv2d(8, 24, 3, stride=2, padding=1), nn.ReLU())
        self.fc = nn.Linear(24, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(self.stem(x)).mean(dim=(2, 3)))


def test_full_mode_matches_the_library_in_fp32(image):
    model = _Tiny().eval()
    ours = score_cam(model, image, [model.features], LogitTarget(2), precision="fp32")
    lib = get_method("scorecam_lib").compute(model, image, [model.features], LogitTarget(2))
    assert ours.shape == lib.shape == (48, 48)
    assert _r(ours, lib) > 0.98 and np.abs(ours - lib).max() < 0.05


def test_bf16_full_mode_agrees_with_fp32_on_a_resnet(resnet, image):
    target = LogitTarget(1)
    fp32 = score_cam(resnet, image, [resnet.layer3], target, precision="fp32")
    auto = score_cam(resnet, image, [resnet.layer3], target, precision="auto")
    assert _r(fp32, auto) > 0.98


@pytest.mark.slow
def test_full_mode_matches_the_library_on_a_resnet(resnet, image):
    target = LogitTarget(1)
    ours = score_cam(resnet, image, [resnet.layer3], target, precision="fp32")
    lib = get_method("scorecam_lib").compute(resnet, image, [resnet.layer3], target)
    assert _r(ours, lib) > 0.98 and np.abs(ours - lib).max() < 0.05
    assert _r(score_cam(resnet, image, [resnet.layer3], target, precision="auto"), lib) > 0.98


def test_fast_mode_with_k_covering_every_channel_is_full_mode(image):
    model = _Tiny().eval()
    full = score_cam(model, image, [model.features], LogitTarget(0), precision="fp32")
    covered = score_cam(model, image, [model.features], LogitTarget(0), precision="fp32", top_k=10_000)
    np.testing.assert_allclose(full, covered, atol=1e-6)
    few = score_cam(model, image, [model.features], LogitTarget(0), precision="fp32", top_k=12)
    assert few.shape == (48, 48) and _r(few, full) > 0.5


def test_fast_mode_scores_only_k_channels(resnet, image):
    inf = inference_model(resnet, "fp32")
    seen = []
    handle = inf.module.register_forward_hook(lambda m, a, o: seen.append(a[0].shape[0]))
    try:
        cam = score_cam(resnet, image, [resnet.layer3], LogitTarget(0), precision="fp32", top_k=16)
    finally:
        handle.remove()
    assert sum(seen) <= 16 + 1  # the k masked inputs (+ one blank input if any channel is constant)
    assert cam.shape == (48, 48) and np.isfinite(cam).all()


class _HalfDead(nn.Module):
    """8 feature channels, 4 of them dead after the ReLU (zero weights, negative bias)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.conv = nn.Conv2d(1, 8, 3, stride=4, padding=1)
        with torch.no_grad():
            self.conv.weight[4:] = 0
            self.conv.bias[4:] = -1
        self.features = nn.ReLU()
        self.fc = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(self.conv(x)).mean(dim=(2, 3)))


def test_blank_channels_cost_one_forward_and_change_nothing():
    model = _HalfDead().eval()
    x = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    inf = inference_model(model, "fp32")
    score_cam(model, x, [model.features], LogitTarget(1), precision="fp32")  # sizes the batch once
    seen = []
    handle = inf.module.register_forward_hook(lambda m, a, o: seen.append(a[0].shape[0]))
    try:
        ours = score_cam(model, x, [model.features], LogitTarget(1), precision="fp32")
    finally:
        handle.remove()
    assert sum(seen) == 4 + 1  # 4 live channels, one blank input for the 4 dead ones
    lib = get_method("scorecam_lib").compute(model, x, [model.features], LogitTarget(1))
    assert _r(ours, lib) > 0.999


def test_stratified_selection_spreads_over_the_ranking():
    act = torch.arange(20.0)[:, None, None] * torch.rand(20, 3, 3, generator=torch.Generator().manual_seed(0))
    live = torch.arange(1, 20)  # channel 0 is blank
    top = select_channels(act, live, 5, "max", "top")
    spread = select_channels(act, live, 5, "max", "surrogate")
    assert len(top) == len(spread) == 5 and 0 not in spread.tolist()
    assert set(top.tolist()) != set(spread.tolist())


def test_surrogate_recovers_additive_scores():
    g = torch.Generator().manual_seed(0)
    act = torch.rand(200, 4, 4, generator=g)
    flat = act.flatten(1)
    masks = (flat - flat.amin(1, keepdim=True)) / (flat.amax(1, keepdim=True) - flat.amin(1, keepdim=True))
    truth = masks @ torch.randn(16, generator=g) + 0.5
    sampled = torch.arange(0, 200, 4)  # 50 of 200
    predicted = surrogate_scores(act, sampled, truth[sampled], ridge=1e-3)
    assert np.corrcoef(predicted.numpy(), truth.numpy())[0, 1] > 0.99


def test_bad_options_are_clear(resnet, image):
    with pytest.raises(ConfigError, match="criterion"):
        score_cam(resnet, image, [resnet.layer4], LogitTarget(0), criterion="bogus")
    with pytest.raises(ConfigError, match=">= 0"):
        score_cam(resnet, image, [resnet.layer4], LogitTarget(0), top_k=-1)


def test_estimate_seconds_grows_with_k(resnet):
    assert layer_channels(resnet, ["layer4", "layer3"], 48) == [512, 256]
    few = estimate_seconds(resnet, "layer4", 8, 48)
    every = estimate_seconds(resnet, "layer4", None, 48)
    assert 0 < few < every
    assert every / few == pytest.approx((512 + 4) / (8 + 4))


def test_hooks_are_removed_when_scoring_fails(resnet, image):
    class Boom(LogitTarget):
        def __call__(self, output):
            if output.ndim == 2 and output.shape[0] > 1:  # the batched masked inputs
                raise RuntimeError("boom")
            return super().__call__(output)

    with pytest.raises(RuntimeError, match="boom"):
        score_cam(resnet, image, [resnet.layer4], Boom(0), top_k=8)
    assert not any(m._forward_hooks for m in resnet.modules())
