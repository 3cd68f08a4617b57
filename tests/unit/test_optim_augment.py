"""Optimisers, per-step schedules (incl. resume) and batched augmentation."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ConfigError
from core.train.augment import affine_grid, build_augment, list_augments
from core.train.optim import build_optimizer, build_schedule, list_optimizers, list_schedules, param_groups

# ---------------------------------------------------------------------------------------
# Optimisers


def _tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)
    )


def test_param_groups_exempt_biases_and_norms_from_weight_decay():
    model = _tiny_model()
    decay, no_decay = param_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(model[4].weight)}
    assert len(no_decay["params"]) == 4  # conv bias, bn weight + bias, linear bias


@pytest.mark.parametrize("name", list_optimizers())
def test_every_optimizer_lowers_the_loss(name):
    model = _tiny_model()
    opt = build_optimizer(name, model, lr=0.01, weight_decay=1e-4, nesterov=(name == "sgd"))
    x, y = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(1)), torch.arange(16) % 2
    losses = []
    for _ in range(15):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_optimizer_options_are_checked():
    with pytest.raises(ConfigError, match="nesterov"):
        build_optimizer("sgd", _tiny_model(), lr=0.1, momentum=0.0, nesterov=True)
    with pytest.raises(ConfigError, match="learning rate"):
        build_optimizer("adam", _tiny_model(), lr=0)
    with pytest.raises(ValueError, match="adamw"):
        build_optimizer("lamb", _tiny_model(), lr=0.1)


# ---------------------------------------------------------------------------------------
# Schedules


def _setup(name: str, lr: float = 0.1, **kw) -> tuple[torch.optim.Optimizer, object]:
    opt = build_optimizer("sgd", [nn.Parameter(torch.zeros(2))], lr=lr)
    return opt, build_schedule(name, opt, **kw)


def _run(opt, sch, steps: int) -> list[float]:
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sch.step()
    return lrs


@pytest.mark.parametrize("name", ["none", "step", "cosine"])
def test_warmup_ramps_linearly_to_the_learning_rate(name):
    opt, sch = _setup(name, epochs=10, steps_per_epoch=10, warmup_epochs=2)
    lrs = _run(opt, sch, 21)
    assert lrs == pytest.approx([0.1 * (t + 1) / 21 for t in range(21)])


def test_cosine_decays_to_near_zero():
    opt, sch = _setup("cosine", epochs=5, steps_per_epoch=20)
    lrs = _run(opt, sch, 100)
    assert lrs[0] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))
    assert lrs[-1] < 1e-3 * 0.1


def test_step_schedule_divides_every_step_size_epochs():
    opt, sch = _setup("step", epochs=6, steps_per_epoch=4, step_size=2, gamma=0.5)
    lrs = _run(opt, sch, 24)
    assert lrs[0] == lrs[7] == pytest.approx(0.1)
    assert lrs[8] == lrs[15] == pytest.approx(0.05)
    assert lrs[16] == pytest.approx(0.025)


def test_onecycle_peaks_at_max_lr_and_ends_low():
    opt, sch = _setup("onecycle", lr=0.01, epochs=4, steps_per_epoch=25, max_lr=0.3, warmup_epochs=1)
    lrs = _run(opt, sch, 100)  # exactly epochs * steps_per_epoch steps must not raise
    peak = max(range(100), key=lrs.__getitem__)
    assert lrs[peak] == pytest.approx(0.3, rel=1e-3) and 23 <= peak <= 26
    assert lrs[0] == pytest.approx(0.3 / 25) and lrs[-1] < 1e-4


@pytest.mark.parametrize("name", list_schedules())
def test_resumed_schedule_gives_the_uninterrupted_lr_sequence(name):
    kw = {"epochs": 6, "steps_per_epoch": 7, "warmup_epochs": 1.5, "step_size": 2, "max_lr": 0.2}
    whole = _run(*_setup(name, **kw), 42)

    opt, sch = _setup(name, **kw)
    first = _run(opt, sch, 17)
    buf = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "sched": sch.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)  # checkpoints are loaded this way
    opt2, sch2 = _setup(name, **kw)
    opt2.load_state_dict(saved["opt"])
    sch2.load_state_dict(saved["sched"])
    assert first + _run(opt2, sch2, 25) == pytest.approx(whole, rel=1e-9)


def test_schedule_options_are_checked():
    opt = build_optimizer("sgd", [nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ConfigError, match="warmup_epochs"):
        build_schedule("cosine", opt, epochs=3, steps_per_epoch=5, warmup_epochs=3)
    with pytest.raises(ValueError, match="onecycle"):
        build_schedule("poly", opt, epochs=3, steps_per_epoch=5)


# ---------------------------------------------------------------------------------------
# Augmentation

SIZE = 96


def _blob_batch(n: int = 32, x: float = SIZE / 2, y: float = SIZE * 0.3) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    blob = torch.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 4.0**2))
    return (0.1 + 0.8 * blob).expand(n, 1, SIZE, SIZE).contiguous()


def _peaks(batch: torch.Tensor) -> torch.Tensor:
    flat = batch[:, 0].flatten(1).argmax(1)
    return torch.stack([flat % SIZE, flat // SIZE], 1).float()  # (x, y)


@pytest.mark.parametrize("name", list_augments())
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_augment_keeps_shape_dtype_device_and_range(name, dtype):
    aug = build_augment(name, img_size=SIZE, seed=0)
    x = torch.rand(8, 3, SIZE, SIZE).to(dtype)
    out = aug(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
    assert torch.isfinite(out.float()).all() and out.min() >= 0 and out.max() <= 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", list_augments())
def test_augment_runs_on_cuda(name):
    x = torch.rand(4, 1, SIZE, SIZE, device="cuda")
    out = build_augment(name, img_size=SIZE, seed=0)(x, torch.Generator().manual_seed(0))
    assert out.device == x.device and out.shape == x.shape


def test_none_is_identity():
    x = torch.rand(4, 1, SIZE, SIZE)
    assert torch.equal(build_augment("none", img_size=SIZE, seed=0)(x, None), x)


@pytest.mark.parametrize("name", ["light", "medium"])
def test_augment_is_deterministic_with_a_generator_and_varies_without_one(name):
    x = _blob_batch(8)
    aug = build_augment(name, img_size=SIZE, seed=5)
    a = aug(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, aug(x, torch.Generator().manual_seed(1)))
    assert not torch.equal(a, aug(x, torch.Generator().manual_seed(2)))
    own = build_augment(name, img_size=SIZE, seed=5)
    first, second = own(x), own(x)
    assert not torch.equal(first, second)
    assert torch.equal(first, build_augment(name, img_size=SIZE, seed=5)(x))


@pytest.mark.parametrize(("name", "max_shift"), [("light", 0.1), ("medium", 0.3)])
def test_augment_changes_images_but_keeps_the_blob_nearby(name, max_shift):
    # the blob sits on the vertical midline so a horizontal flip does not move it
    x = _blob_batch()
    out = build_augment(name, img_size=SIZE, seed=0)(x, torch.Generator().manual_seed(3))
    assert (out - x).abs().mean() > 0.005
    shift = (_peaks(out) - _peaks(x)).norm(dim=1)
    assert shift.max() <= max_shift * SIZE
    assert shift.mean() >= 1.0, "the geometry should move the content a little"


def test_light_never_flips_and_medium_flips_about_half():
    x = _blob_batch(64, x=SIZE * 0.25, y=SIZE / 2)
    g = torch.Generator().manual_seed(0)
    light = _peaks(build_augment("light", img_size=SIZE, seed=0)(x, g))[:, 0]
    medium = _peaks(build_augment("medium", img_size=SIZE, seed=0)(x, g))[:, 0]
    assert (light < SIZE / 2).all()
    assert 16 <= (medium > SIZE / 2).sum() <= 48


def test_fast_affine_grid_matches_torch():
    theta = torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(0))
    ref = F.affine_grid(theta, [5, 1, 24, 40], align_corners=False)
    assert torch.allclose(affine_grid(theta, 24, 40), ref, atol=1e-6)
