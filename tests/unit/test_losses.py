"""Class-imbalance losses: weights checked against hand calculations, params validated."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from core.errors import ConfigError
from core.train.losses import build_loss, class_weights, get_loss, list_losses


def _batch(k: int, n: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, generator=g), torch.randint(0, k, (n,), generator=g)


@pytest.mark.parametrize("name", list_losses())
def test_every_loss_builds_runs_backward_and_records_json(name):
    spec = get_loss(name)
    built = build_loss(name, [30, 10])
    logits, targets = _batch(1 if spec.single_logit else 2)
    logits.requires_grad_(True)
    loss = built.criterion(logits, targets)
    loss.backward()
    assert loss.dim() == 0 and torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    json.dumps(built.weights_used)
    assert "class_weights" in built.weights_used
    for key, p in spec.params.items():
        assert p.help, f"{name}.{key} has no help text for the form"


def test_weighted_ce_gives_minority_three_times_the_weight_at_3_to_1():
    # the ResNet-50 notebook gave the majority class the larger weight; this is the fix
    w = class_weights("weighted_ce", [300, 100])
    assert w == pytest.approx([400 / (2 * 300), 400 / (2 * 100)])
    assert w[1] == pytest.approx(3 * w[0])


def test_weighted_ce_criterion_uses_the_weights():
    built = build_loss("weighted_ce", [300, 100])
    logits, targets = _batch(2)
    expected = F.cross_entropy(logits, targets, weight=torch.tensor([2 / 3, 2.0]))
    assert built.criterion(logits, targets).item() == pytest.approx(expected.item(), rel=1e-6)


def test_ce_has_no_weights_and_honours_label_smoothing():
    assert class_weights("ce", [300, 100]) is None
    logits, targets = _batch(3)
    built = build_loss("ce", [5, 5, 5], {"label_smoothing": 0.1})
    expected = F.cross_entropy(logits, targets, label_smoothing=0.1)
    assert built.criterion(logits, targets).item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("beta", [0.9, 0.999])
def test_class_balanced_matches_effective_number_by_hand(beta):
    counts = [30, 10, 5]
    # effective number E_n = 1 + beta + ... + beta^(n-1), weight ∝ 1 / E_n, sum of weights = k
    effective = [sum(beta**i for i in range(n)) for n in counts]
    raw = [1 / e for e in effective]
    expected = [3 * r / sum(raw) for r in raw]
    w = class_weights("class_balanced", counts, {"beta": beta})
    assert w == pytest.approx(expected, rel=1e-9)
    assert sum(w) == pytest.approx(3.0)
    assert w[2] > w[1] > w[0]


def test_class_balanced_is_flatter_than_inverse_frequency_at_small_beta():
    w = class_weights("class_balanced", [300, 100], {"beta": 0.9})
    # both classes have far more than 1 / (1 - beta) = 10 images: nearly equal weights
    assert w[1] / w[0] == pytest.approx(1.0, abs=1e-4)


def test_bce_auto_pos_weight_is_negatives_over_positives():
    built = build_loss("bce", [300, 100])
    assert built.weights_used["pos_weight"] == pytest.approx(3.0)
    assert get_loss("bce").single_logit
    logits = torch.tensor([[0.3], [-1.2], [2.0]])
    targets = torch.tensor([1, 0, 1])
    expected = F.binary_cross_entropy_with_logits(
        logits[:, 0], targets.float(), pos_weight=torch.tensor([3.0])
    )
    assert built.criterion(logits, targets).item() == pytest.approx(expected.item(), rel=1e-6)
    assert built.criterion(logits[:, 0], targets).item() == pytest.approx(expected.item(), rel=1e-6)


def test_bce_given_pos_weight_and_rejects_three_classes():
    assert build_loss("bce", [300, 100], {"pos_weight": 5}).weights_used["pos_weight"] == 5.0
    with pytest.raises(ConfigError, match="2 classes"):
        build_loss("bce", [10, 10, 10])
    with pytest.raises(ConfigError, match="pos_weight"):
        build_loss("bce", [10, 10], {"pos_weight": 0})


def test_focal_with_gamma_zero_and_no_alpha_equals_ce():
    logits, targets = _batch(4, n=32)
    built = build_loss("focal", [5, 6, 7, 8], {"gamma": 0})
    assert built.criterion(logits, targets).item() == pytest.approx(
        F.cross_entropy(logits, targets).item(), rel=1e-6
    )


def test_focal_down_weights_easy_examples():
    focal = build_loss("focal", [10, 10], {"gamma": 2.0}).criterion
    easy = (torch.tensor([[4.0, -4.0]]), torch.tensor([0]))  # p_t ≈ 0.9997
    hard = (torch.tensor([[-1.0, 1.0]]), torch.tensor([0]))  # p_t ≈ 0.12
    easy_ratio = focal(*easy) / F.cross_entropy(*easy)
    hard_ratio = focal(*hard) / F.cross_entropy(*hard)
    assert easy_ratio < 1e-5 and hard_ratio > 0.7


def test_focal_alpha_auto_is_inverse_frequency_and_explicit_list_is_checked():
    assert build_loss("focal", [300, 100], {"alpha": "auto"}).weights_used["alpha"] == pytest.approx(
        [2 / 3, 2.0]
    )
    built = build_loss("focal", [300, 100], {"alpha": [0.25, 0.75], "gamma": 0})
    logits, targets = _batch(2)
    per_image = F.cross_entropy(logits, targets, reduction="none") * torch.tensor([0.25, 0.75])[targets]
    assert built.criterion(logits, targets).item() == pytest.approx(per_image.mean().item(), rel=1e-6)
    with pytest.raises(ConfigError, match="alpha"):
        build_loss("focal", [10, 10, 10], {"alpha": [1.0, 2.0]})


@pytest.mark.parametrize(
    ("name", "params", "named"),
    [
        ("focal", {"gamma": 11}, "gamma"),
        ("focal", {"gama": 2}, "gama"),
        ("focal", {"alpha": "sometimes"}, "alpha"),
        ("class_balanced", {"beta": 0.5}, "beta"),
        ("ce", {"label_smoothing": "high"}, "label_smoothing"),
        ("weighted_ce", {"pos_weight": 3}, "pos_weight"),
    ],
)
def test_bad_params_name_the_param(name, params, named):
    with pytest.raises(ConfigError, match=named):
        build_loss(name, [10, 20], params)


def test_class_with_no_training_images_is_named():
    with pytest.raises(ConfigError, match="class 1 has 0"):
        build_loss("weighted_ce", [10, 0, 5])


def test_unknown_loss_lists_valid_names():
    with pytest.raises(ValueError, match="weighted_ce"):
        get_loss("wce")


def test_weights_follow_the_criterion_to_another_dtype_device():
    crit = build_loss("class_balanced", [30, 10]).criterion
    assert any(b.numel() == 2 for b in crit.buffers()), "weights must be buffers so .to(device) moves them"
