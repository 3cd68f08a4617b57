"""Folding eval-mode BatchNorm into the conv before it (models.fold): same outputs, same
named layers for hooks, and only where it is exact."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from core.explain.methods import LogitTarget, get_method
from core.explain.scorecam import inference_model, score_cam
from models import build_model, list_archs
from models.fold import conv_bn_pairs, fold_batchnorm

HEAVY = {"resnet101", "resnet152"}


def _with_real_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """A freshly built model's BatchNorms are the identity (mean 0, var 1, weight 1, bias 0):
    folding them would prove nothing. Give each the statistics a trained one has."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            if m.track_running_stats:
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
    return model.eval()


def _n_bn(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize("arch", [pytest.param(a, marks=pytest.mark.slow) if a in HEAVY else a for a in list_archs()])
def test_every_architecture_folds_and_keeps_its_outputs(arch):
    torch.manual_seed(0)
    model = _with_real_statistics(build_model(arch, 3, 1))
    folded = copy.deepcopy(model)
    n = fold_batchnorm(folded)
    assert n > 0
    assert _n_bn(folded) == _n_bn(model) - n
    x = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = model(x), folded(x)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max()))


def test_resnet_folds_every_batchnorm_and_keeps_its_module_names():
    torch.manual_seed(0)
    model = _with_real_statistics(build_model("resnet18", 3, 1))
    folded = copy.deepcopy(model)
    assert fold_batchnorm(folded) == _n_bn(model) == 20
    assert {name for name, _ in folded.named_modules()} == {name for name, _ in model.named_modules()}
    assert isinstance(folded.layer4[1].bn2, nn.Identity)
    assert folded.layer4[1].conv2.bias is not None and model.layer4[1].conv2.bias is None

    # a hook on a named layer (a block, or a folded BatchNorm's place) sees the same values
    seen: dict[str, list[torch.Tensor]] = {"model": [], "folded": []}
    for key, m in (("model", model), ("folded", folded)):
        m.layer4.register_forward_hook(lambda mod, a, o, key=key: seen[key].append(o))
        m.layer4[1].bn2.register_forward_hook(lambda mod, a, o, key=key: seen[key].append(o))
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        model(x)
        folded(x)
    assert len(seen["model"]) == len(seen["folded"]) == 2
    for a, b in zip(seen["model"], seen["folded"], strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)


def test_training_mode_is_refused():
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(build_model("resnet18", 2, 1).train())


class _NotFoldable(nn.Module):
    """A conv called twice, a BatchNorm after a ReLU, a BatchNorm without running statistics,
    and a conv whose output is used beside its BatchNorm: none may be folded."""

    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Conv2d(4, 4, 3, padding=1)
        self.bn_shared = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.bn_after_relu = nn.BatchNorm2d(4)
        self.conv_batch_stats = nn.Conv2d(4, 4, 1)
        self.bn_batch_stats = nn.BatchNorm2d(4, track_running_stats=False)
        self.conv_two_users = nn.Conv2d(4, 4, 1)
        self.bn_two_users = nn.BatchNorm2d(4)
        self.conv_ok = nn.Conv2d(4, 4, 1)
        self.bn_ok = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn_shared(self.shared(self.shared(x)))
        x = self.bn_after_relu(self.relu(x))
        x = self.bn_batch_stats(self.conv_batch_stats(x))
        y = self.conv_two_users(x)
        x = self.bn_two_users(y) + y
        return self.bn_ok(self.conv_ok(x))


def test_only_exact_folds_are_made():
    model = _with_real_statistics(_NotFoldable())
    assert conv_bn_pairs(model) == [("conv_ok", "bn_ok")]
    folded = copy.deepcopy(model)
    assert fold_batchnorm(folded) == 1
    x = torch.randn(3, 4, 8, 8)
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), rtol=1e-4, atol=1e-5)


class _Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            x = -x
        return self.bn(self.conv(x))


def test_a_model_fx_cannot_trace_is_left_as_it_is():
    model = _Untraceable().eval()
    assert fold_batchnorm(model) == 0
    assert isinstance(model.bn, nn.BatchNorm2d)


def test_score_cam_folds_its_own_copy_and_still_matches_the_library():
    torch.manual_seed(0)
    model = _with_real_statistics(build_model("resnet18", 3, 1), seed=3)
    inf = inference_model(model, "fp32")
    assert inf.folded == 20 and _n_bn(inf.module) == 0
    assert _n_bn(model) == 20  # the model the user inspects is untouched
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 1, 64, 64, generator=g)
    ours = score_cam(model, x, [model.layer3], LogitTarget(1), precision="fp32")
    lib = get_method("scorecam_lib").compute(model, x, [model.layer3], LogitTarget(1))
    assert float(np.corrcoef(ours.ravel(), lib.ravel())[0, 1]) > 0.999
    assert np.abs(ours - lib).max() < 0.02
