"""Explanations: every method on every architecture, classic CAM's identity with Grad-CAM,
targets of single-logit models, hooks, scores, overlays, the cache, the service and the
``cam`` command end to end."""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from core.errors import ChestLabError, ConfigError
from core.explain import overlay as ov
from core.explain import scores as sc
from core.explain.cache import MapCache, MapKey, image_hash
from core.explain.methods import LogitTarget, get_method, list_methods
from models import build_model, get_arch, get_submodule, list_archs
from tests.conftest import ROOT, write_boxed_dataset

SIZE = 64
# The library's perturbation methods run one forward pass per channel of the target layer,
# 16 at a time: slow tests (our Score-CAM runs in fast mode everywhere).
HEAVY = {"ablationcam", "scorecam_lib"}


@lru_cache(maxsize=4)
def _model(arch: str, n_classes: int) -> nn.Module:
    torch.manual_seed(0)
    return build_model(arch, n_classes, 1).eval()


def _x(seed: int = 0, size: int = SIZE) -> torch.Tensor:
    return torch.randn(1, 1, size, size, generator=torch.Generator().manual_seed(seed))


def _hooks(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()
    )


def _r(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


# The deepest models run every method in the slow suite; by default the cheap ones, and
# DRENet's Score-CAM (several target layers at once).
DEEP = {"resnet101", "resnet152", "densenet121", "drenet"}
DEEP_DEFAULT = {("drenet", "scorecam"), *((a, m) for a in DEEP for m in ("cam", "gradcam"))}


def _cases():
    for arch in list_archs():
        for method in list_methods(include_hidden=True):
            slow = method in HEAVY or (arch in DEEP and (arch, method) not in DEEP_DEFAULT)
            yield pytest.param(arch, method, id=f"{arch}-{method}", marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize(("arch", "method"), list(_cases()))
def test_every_method_gives_a_finite_map_of_the_input_size(arch, method):
    spec = get_arch(arch)
    n_classes = 1 if method in ("gradcam", "scorecam") else 3  # single-logit heads too
    model = _model(arch, n_classes)
    layers = [get_submodule(model, name) for name in spec.target_layers]
    target = LogitTarget(0, single_logit=n_classes == 1)
    if method == "cam" and not spec.classic_cam:
        with pytest.raises(ConfigError, match="global-average-pool \\+ linear head.*Grad-CAM"):
            get_method(method).compute(model, _x(), layers, target, arch=arch)
        return
    cam = get_method(method).compute(model, _x(), layers, target, arch=arch, top_k=4, batch_size=64)
    assert cam.shape == (SIZE, SIZE) and cam.dtype == np.float32
    assert np.isfinite(cam).all() and cam.min() >= 0 and cam.max() <= 1
    assert _hooks(model) == 0


def test_classic_cam_equals_gradcam_on_a_resnet():
    # GAP + linear: dy_c/dA_k(i,j) = w_ck / Z, so Grad-CAM's weights are the fc row / Z.
    model = _model("resnet18", 3)
    x = _x(5, 96)
    for cls in range(3):
        cam = get_method("cam").compute(model, x, [model.layer4], LogitTarget(cls), arch="resnet18")
        grad = get_method("gradcam").compute(model, x, [model.layer4], LogitTarget(cls))
        assert cam.max() > 0 and _r(cam, grad) > 0.99


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "hirescam"])
def test_several_target_layers_in_sequence_each_get_their_gradient(method):
    # layer3 feeds layer4: the map over both must combine both layers' own maps (the
    # library scales each to the input, clips at 0 and averages), not pair one layer's
    # gradients with the other's activations.
    model = _model("resnet18", 3)
    x = _x(7, 96)
    compute = get_method(method).compute
    both = compute(model, x, [model.layer3, model.layer4], LogitTarget(1))
    l3 = compute(model, x, [model.layer3], LogitTarget(1))
    l4 = compute(model, x, [model.layer4], LogitTarget(1))
    assert both.shape == (96, 96) and np.isfinite(both).all()
    assert _r(both, l3 + l4) > 0.9


def _manual_gradcam(model: nn.Module, x: torch.Tensor, layers: list[nn.Module], index: int) -> np.ndarray:
    """Grad-CAM with each layer's gradient taken from that layer's own output tensor (keyed
    by module, not by hook order): the reference for models whose backward order is not
    the reverse of their forward order."""
    outputs: dict[int, torch.Tensor] = {}

    def keep(i: int):
        def hook(module, args, out):
            out.retain_grad()
            outputs[i] = out

        return hook

    handles = [layer.register_forward_hook(keep(i)) for i, layer in enumerate(layers)]
    try:
        model.zero_grad()
        model(x)[0, index].backward()
    finally:
        for h in handles:
            h.remove()
    maps = []
    for i in range(len(layers)):
        act, grad = outputs[i], outputs[i].grad
        cam = torch.relu((grad.mean(dim=(2, 3), keepdim=True) * act).sum(dim=1, keepdim=True))
        cam = (cam - cam.min()) / (cam.max() - cam.min() + 1e-12)  # scaled, then resized, as the library does
        maps.append(torch.nn.functional.interpolate(cam, size=x.shape[-2:], mode="bilinear")[0, 0].detach().numpy())
    return np.mean(maps, axis=0)


def test_fpn_levels_each_get_their_own_gradient():
    # DRENet's top-down FPN pathway runs backward hooks out of forward order; the library
    # alone paired level 0's activation with level 3's gradient (wrong maps, or a shape error
    # for XGrad-CAM / Layer-CAM / HiRes-CAM).
    torch.manual_seed(0)
    model = _model("drenet", 3)
    layers = [get_submodule(model, name) for name in get_arch("drenet").target_layers]
    x = _x(3, SIZE)
    ours = get_method("gradcam").compute(model, x, layers, LogitTarget(2))
    assert _r(ours, _manual_gradcam(model, x, layers, 2)) > 0.97  # was 0.57
    for method in ("xgradcam", "layercam", "hirescam"):
        assert np.isfinite(get_method(method).compute(model, x, layers, LogitTarget(2))).all()


def test_single_logit_targets_explain_both_classes():
    out = torch.tensor([[2.5], [-1.0]])
    assert torch.equal(LogitTarget(1, True)(out), out[:, 0])
    assert torch.equal(LogitTarget(0, True)(out), -out[:, 0])
    assert LogitTarget(0, True)(out[0]).item() == -2.5  # one sample, as pytorch-grad-cam passes it
    assert torch.allclose(LogitTarget(0, True).probability(out), 1 - torch.sigmoid(out[:, 0]))
    with pytest.raises(ConfigError):
        LogitTarget(2, True)
    model = _model("resnet18", 1)
    x = _x(2, 96)
    pos = get_method("gradcam").compute(model, x, [model.layer4], LogitTarget(1, True))
    neg = get_method("gradcam").compute(model, x, [model.layer4], LogitTarget(0, True))
    # The negated logit's gradients are the negated gradients: what one map shows the other hides.
    assert pos.max() > 0 and neg.max() > 0
    assert not ((pos > 0.3) & (neg > 0.3)).any()
    cam1 = get_method("cam").compute(model, x, [model.layer4], LogitTarget(1, True), arch="resnet18")
    assert _r(cam1, pos) > 0.99


class _Boom(LogitTarget):
    """A target that fails on its ``after``-th call."""

    calls: list[int]

    def __init__(self, index: int, after: int = 1) -> None:
        super().__init__(index)
        object.__setattr__(self, "calls", [after])

    def __call__(self, output):
        self.calls[0] -= 1
        if self.calls[0] <= 0:
            raise RuntimeError("boom")
        return super().__call__(output)


class _Raise(nn.Module):
    def forward(self, x):
        raise RuntimeError("boom")


def test_hooks_are_removed_after_an_exception():
    model = _model("resnet18", 3)
    with pytest.raises(RuntimeError, match="boom"):  # in the backward's target
        get_method("gradcam").compute(model, _x(), [model.layer4], _Boom(0))
    assert _hooks(model) == 0
    with pytest.raises(RuntimeError, match="boom"):  # with its stand-in layer swapped in
        get_method("ablationcam").compute(model, _x(), [model.layer4], _Boom(0, after=2))
    assert _hooks(model) == 0 and isinstance(model.layer4, nn.Sequential)
    # pytorch-grad-cam's own context manager would swallow this IndexError and return None.
    with pytest.raises(IndexError):
        get_method("gradcam").compute(model, _x(), [model.layer4], LogitTarget(7))
    assert _hooks(model) == 0
    broken = build_model("resnet18", 3, 1).eval()
    broken.fc = _Raise()  # fails in the forward pass, after the target layer's hooks fired
    for method in ("cam", "eigencam", "scorecam", "gradcam++"):
        with pytest.raises(RuntimeError, match="boom"):
            get_method(method).compute(
                broken, _x(), [broken.layer4], LogitTarget(0), classifier=nn.Linear(512, 3)
            )
        assert _hooks(broken) == 0, method


def test_classic_cam_names_the_head_it_needs():
    from core.explain.methods import classic_cam_classifier

    with pytest.raises(ConfigError, match="drenet has .*FPN.*use Grad-CAM"):
        classic_cam_classifier(nn.Module(), "drenet")
    assert classic_cam_classifier(_model("resnet18", 3), "resnet18") is _model("resnet18", 3).fc


# ---------------------------------------------------------------- scores


def test_energy_in_box_is_the_share_of_mass_inside():
    cam = np.zeros((10, 10), np.float32)
    cam[2:4, 2:4] = 1.0
    assert sc.energy_in_box(cam, [(2, 2, 2, 2)]) == pytest.approx(1.0)
    assert sc.energy_in_box(cam, [(2, 2, 1, 2)]) == pytest.approx(0.5)
    assert sc.energy_in_box(cam, [(6, 6, 3, 3)]) == 0.0
    assert sc.energy_in_box(cam, [(2, 2, 1, 2), (3, 2, 1, 2), (2, 2, 2, 2)]) == pytest.approx(1.0)  # a union
    uniform = np.ones((10, 10))
    assert sc.energy_in_box(uniform, [(0, 0, 5, 4)]) == pytest.approx(
        sc.box_area_share((10, 10), [(0, 0, 5, 4)])
    )
    assert sc.energy_in_box(np.zeros((10, 10)), [(0, 0, 5, 5)]) == 0.0
    assert sc.energy_in_box(-cam, [(2, 2, 2, 2)]) == 0.0  # negative mass does not count


def test_pointing_game_hits_inside_and_within_tolerance():
    cam = np.zeros((100, 100))
    cam[50, 50] = 1.0
    assert sc.pointing_game(cam, [(40, 40, 20, 20)])
    assert not sc.pointing_game(cam, [(60, 60, 10, 10)], tolerance=5)
    assert sc.pointing_game(cam, [(53, 50, 10, 10)], tolerance=3)  # 2.5 px from the peak's centre
    assert not sc.pointing_game(cam, [(53, 50, 10, 10)], tolerance=2)
    assert sc.pointing_game(cam, [(53, 50, 10, 10)])  # default 3 px on a 100 px map
    assert not sc.pointing_game(np.ones((100, 100)), [(0, 0, 100, 100)])  # a blank map points nowhere


def test_boxes_scale_to_the_squashed_input():
    assert sc.boxes_to_map([(100, 50, 200, 100)], 1000, 500, 224) == [pytest.approx((22.4, 22.4, 44.8, 44.8))]


class _LeftHalf(nn.Module):
    """A 'classifier' whose class-1 logit is the energy of the image's left half."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = (x[:, 0, :, : x.shape[-1] // 2] ** 2).mean(dim=(1, 2)) * 8 - 4
        return torch.stack([torch.zeros_like(left), left], dim=1)


def _checkerboard(size: int = 32) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return (((yy + xx) % 2) * 2 - 1).float()[None, None]


def test_deletion_auc_is_lower_for_the_faithful_map():
    x = _checkerboard()  # blurring it away leaves ~0: deleting the left half kills the logit
    left, right = np.zeros((32, 32), np.float32), np.zeros((32, 32), np.float32)
    left[:, :16], right[:, 16:] = 1.0, 1.0
    model, target = _LeftHalf(), LogitTarget(1)
    faithful, unfaithful = sc.deletion_auc(model, x, left, target), sc.deletion_auc(model, x, right, target)
    assert 0 <= faithful < unfaithful - 0.2 and unfaithful <= 1
    with pytest.raises(ConfigError, match="unknown"):
        sc.get_faithfulness("bogus")


def test_road_prefers_the_faithful_map():
    x = _checkerboard()
    model, target = _LeftHalf(), LogitTarget(1)
    rng = np.random.default_rng(0)
    good, bad = rng.random((32, 32)).astype(np.float32) * 0.1, rng.random((32, 32)).astype(np.float32) * 0.1
    good[:, :16] += 1.0
    bad[:, 16:] += 1.0
    assert sc.road_score(model, x, good, target, (30, 70)) > sc.road_score(model, x, bad, target, (30, 70))


# ---------------------------------------------------------------- overlays


def test_overlay_blends_and_resizes():
    gray = np.full((40, 60), 100, np.uint8)
    cam = np.ones((8, 8), np.float32)
    assert np.array_equal(ov.overlay(gray, cam, 0.0), np.full((40, 60, 3), 100, np.uint8))
    top = ov.colormap_table("jet")[255]
    full = ov.overlay(gray, cam, 1.0, "jet")
    assert full.shape == (40, 60, 3) and (full == top).all()
    half = ov.overlay(gray, cam, 0.5, "viridis")
    assert np.allclose(half[0, 0], (100 + ov.colormap_table("viridis")[255].astype(float)) / 2, atol=1)
    with pytest.raises(ConfigError, match="colormap"):
        ov.overlay(gray, cam, 0.5, "rainbow-unicorn")
    with pytest.raises(ConfigError, match="opacity"):
        ov.overlay(gray, cam, 1.5)


def test_boxes_are_outlined_not_filled():
    rgb = np.zeros((50, 50, 3), np.uint8)
    out = ov.draw_boxes(rgb, [(10, 10, 20, 20)], color=(0, 255, 0), width=1)
    assert tuple(out[10, 15]) == (0, 255, 0) and tuple(out[29, 15]) == (0, 255, 0)
    assert tuple(out[20, 20]) == (0, 0, 0) and tuple(out[5, 5]) == (0, 0, 0)
    assert rgb.max() == 0  # the input is untouched


def test_grid_png_holds_every_cell():
    cells = [np.full((30, 40), 255, np.uint8), None, np.zeros((20, 20, 3), np.uint8)]
    png = ov.grid_png(cells, rows=1, cols=3, titles=["original", "", "Grad-CAM 0.12 s"], cell_size=64, pad=2)
    img = Image.open(io.BytesIO(png))
    assert img.size == (3 * 66 + 2, 64 + 14 + 4)
    with pytest.raises(ValueError):
        ov.grid_png(cells, rows=1, cols=2)


# ---------------------------------------------------------------- cache


def _key(**change) -> MapKey:
    base = dict(
        run_id="r1",
        checkpoint="best.pt",
        checkpoint_mtime=1.0,
        image="abc",
        method="gradcam",
        layers="layer4",
        target=1,
        top_k=0,
        criterion="",
        img_size=64,
    )
    base.update(change)
    return MapKey(**base)


def test_cache_keeps_maps_in_memory_and_on_disk(tmp_path):
    cam = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    cache = MapCache(tmp_path, max_items=2)
    cache.put(_key(), cam, 1.5)
    assert cache.get(_key()).seconds == 1.5
    for change in (
        {"method": "gradcam++"},
        {"target": 0},
        {"checkpoint_mtime": 2.0},
        {"layers": "layer3"},
        {"top_k": 32},
        {"run_id": "r2"},
        {"checkpoint": "last.pt"},
        {"image": "abd"},
        {"img_size": 128},
        {"criterion": "max/top"},
    ):
        assert cache.get(_key(**change)) is None
    fresh = MapCache(tmp_path)  # another process: from disk, float16
    hit = fresh.get(_key())
    assert hit is not None and hit.seconds == 1.5 and np.abs(hit.cam - cam).max() < 1e-3
    for t in range(3):
        cache.put(_key(target=t + 5), cam, 0.1)
    assert len(cache) == 2
    assert MapCache(None).get(_key()) is None
    assert image_hash(np.zeros((4, 4), np.uint8)) != image_hash(np.zeros((4, 5), np.uint8))


# ---------------------------------------------------------------- a run on disk


def _write_run(
    workspace: Path, data: Path, run_id: str, arch: str = "resnet18", single: bool = False
) -> None:
    from core.config import RunConfig
    from core.train.checkpoint import save_checkpoint

    config = RunConfig(
        data=str(data),
        format="csv",
        arch=arch,
        img_size=SIZE,
        in_channels=1,
        precision="fp32",
        loss="bce" if single else "weighted_ce",
    )
    torch.manual_seed(0)
    model = build_model(arch, 1 if single else 2, 1)
    save_checkpoint(
        workspace / "runs" / run_id / "checkpoints" / "best.pt",
        {
            "model": model.state_dict(),
            "config": config.to_dict(),
            "classes": ["normal", "opacity"],
            "normalization": {"mean": [0.449], "std": [0.226]},
            "single_logit": single,
        },
    )


@pytest.fixture
def run(workspace, tmp_path) -> tuple[Path, Path]:
    data = tmp_path / "data"
    data.mkdir()
    write_boxed_dataset(data)
    _write_run(workspace, data, "r1")
    return workspace, data


def test_explain_uses_the_cache_and_collects_method_errors(run):
    from core.evaluate.predict import load_run_model
    from core.explain.service import explain

    workspace, data = run
    loaded = load_run_model("r1", workspace=workspace)
    image = np.asarray(Image.open(data / "test_opacity_0.png"))
    first = explain(loaded, image, ["gradcam", "scorecam"], "opacity", top_k=4)
    assert [r.method for r in first] == ["gradcam", "scorecam"] and not any(r.cached for r in first)
    assert all(r.target_class == "opacity" and r.cam.shape == (SIZE, SIZE) for r in first)
    assert first[1].top_k == 4
    again = explain(loaded, image, ["gradcam", "scorecam"], "opacity", top_k=4)
    assert all(r.cached for r in again) and np.allclose(again[0].cam, first[0].cam, atol=1e-3)
    assert len(list((workspace / "cache" / "cam").rglob("*.npy"))) == 2
    other = explain(loaded, image, ["gradcam"], "normal")
    assert not other[0].cached
    with pytest.raises(ChestLabError, match="valid: .*gradcam"):
        explain(loaded, image, ["gradcam", "nonsense"])
    with pytest.raises(ConfigError, match="not a class"):
        explain(loaded, image, ["gradcam"], "pneumonia")
    mobile = dataclasses.replace(
        loaded, model=_model("mobilenet_v3_large", 2), config=loaded.config.replace(arch="mobilenet_v3_large")
    )
    collected = explain(mobile, image, ["cam", "gradcam"], errors="collect", cache=False)
    assert collected[0].cam is None and "global-average-pool" in collected[0].error
    assert collected[1].error is None and collected[1].cam.shape == (SIZE, SIZE)


def test_list_layers_offers_blocks_not_in_place_outputs():
    from core.explain.service import list_layers

    names = list_layers(_model("resnet18", 3))
    assert {"layer3", "layer4", "layer4.1", "layer4.1.conv2"} <= set(names)
    assert "layer4.1.bn2" not in names  # the block adds the shortcut into it in place
    assert "layer4.1.relu" not in names  # called twice per block
    assert names.index("layer3") < names.index("layer4")
    assert _hooks(_model("resnet18", 3)) == 0


def _cli(*args: str) -> tuple[int, str, str]:
    import contextlib

    from core.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def test_cam_command_writes_overlays_with_box_scores(run, tmp_path):
    workspace, data = run
    code, out, err = _cli(
        "cam",
        "r1",
        str(data / "test_opacity_1.png"),
        "--methods",
        "cam,gradcam,scorecam",
        "--target",
        "true",
        "--out",
        str(tmp_path / "pngs"),
        "--json",
        "--k",
        "4",
    )
    assert code == 0, err
    result = json.loads(out)
    assert set(result["prediction"]) == {"normal", "opacity"}
    assert sum(result["prediction"].values()) == pytest.approx(1.0, abs=1e-5)
    assert result["target"] == result["true_class"] == "opacity"
    assert [m["method"] for m in result["maps"]] == ["cam", "gradcam", "scorecam"]
    for m in result["maps"]:
        assert 0 <= m["energy_in_box"] <= 1 and isinstance(m["pointing_game"], bool) and m["seconds"] >= 0
        assert Image.open(m["png"]).size == (SIZE + 16, SIZE)  # the image's own aspect
    # An image outside the dataset has no boxes, so no box scores.
    outside = tmp_path / "outside.png"
    Image.fromarray(np.zeros((30, 30), np.uint8)).save(outside)
    code, out, err = _cli("cam", "r1", str(outside), "--methods", "gradcam", "--json", "--out", str(tmp_path))
    assert code == 0, err
    assert "energy_in_box" not in json.loads(out)["maps"][0]


def test_cam_command_scores_a_split(run):
    code, out, err = _cli("cam", "r1", "--split", "test", "--methods", "gradcam,cam", "--json")
    assert code == 0, err
    rows = json.loads(out)["methods"]
    assert [r["method"] for r in rows] == ["gradcam", "cam"]
    for r in rows:
        assert r["n_images"] == 3  # the test split's opacity images, the ones with boxes
        assert 0 <= r["energy_in_box"] <= 1 and 0 <= r["pointing_game"] <= 1
        assert 0 <= r["faithfulness"] <= 1 and r["seconds_per_image"] >= 0
    code, again, _ = _cli("cam", "r1", "--split", "test", "--methods", "gradcam,cam", "--json")
    assert json.loads(again)["methods"] == rows  # from the score cache


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("cam", "nope", "x.png"), "no run 'nope'"),
        (("cam", "r1", "missing.png"), "missing.png"),
        (("cam", "r1", "IMAGE", "--methods", "gradcam,bogus"), "valid: cam, gradcam"),
        (("cam", "r1"), "either an IMAGE or --split"),
        (("cam", "r1", "IMAGE", "--target", "7"), "not a class"),
        (("cam", "r1", "--split", "test", "--faithfulness", "vibes"), "faithfulness"),
    ],
)
def test_cam_command_reports_bad_input_in_one_line(run, args, message):
    workspace, data = run
    args = tuple(str(data / "test_normal_0.png") if a == "IMAGE" else a for a in args)
    code, out, err = _cli(*args)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err


def test_cam_command_refuses_classic_cam_without_a_gap_linear_head(run):
    workspace, data = run
    _write_run(workspace, data, "mobile", arch="mobilenet_v3_large")
    code, _, err = _cli("cam", "mobile", str(data / "test_opacity_0.png"), "--methods", "cam")
    assert code == 2 and "classic CAM needs a global-average-pool + linear head" in err


def test_a_maps_seconds_never_include_importing_the_library(run):
    """The first map of a process used to report ~1.8 s for Grad-CAM (0.02 s after): the
    import of pytorch-grad-cam was timed with it. In a fresh process, the library must be
    imported before explain() first reads the clock."""
    workspace, data = run
    script = f"""
import sys, time
import numpy as np
from PIL import Image
from core.evaluate.predict import load_run_model
from core.explain import service
assert "pytorch_grad_cam" not in sys.modules
loaded = load_run_model("r1", workspace={str(workspace)!r})
image = np.asarray(Image.open({str(data / "test_opacity_0.png")!r}))
seen = []
real = time.perf_counter
class Clock:
    @staticmethod
    def perf_counter():
        seen.append("pytorch_grad_cam" in sys.modules)
        return real()
service.time = Clock
result = service.explain(loaded, image, ["gradcam"], cache=False)[0]
assert result.cam is not None and seen, seen
print("imported before the clock:", seen[0])
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "imported before the clock: True" in out.stdout


def test_a_single_logit_run_is_explained_for_either_class(workspace, tmp_path):
    """A BCE run (one logit) through load_run_model, explain() and the cam command: two
    class probabilities from the sigmoid, targets by class name, opposite Grad-CAM maps."""
    from core.evaluate.predict import load_run_model
    from core.explain.service import explain

    data = tmp_path / "data"
    data.mkdir()
    write_boxed_dataset(data)
    _write_run(workspace, data, "b1", single=True)
    loaded = load_run_model("b1", workspace=workspace)
    assert loaded.single_logit and loaded.classes == ["normal", "opacity"]
    image = np.asarray(Image.open(data / "test_opacity_1.png"))
    x = loaded.to_input(image)
    with torch.no_grad():
        p = torch.sigmoid(loaded.model(x)[0, 0]).item()
    assert loaded.predict_proba(x)[0] == pytest.approx([1 - p, p], abs=1e-5)
    pos, neg = (explain(loaded, image, ["gradcam", "scorecam"], c, top_k=4, cache=False) for c in ("opacity", "normal"))
    assert [r.target_class for r in pos] == ["opacity"] * 2 and [r.target for r in pos] == [1, 1]
    assert [r.target_class for r in neg] == ["normal"] * 2 and [r.target for r in neg] == [0, 0]
    assert all(r.cam is not None and np.isfinite(r.cam).all() for r in pos + neg)
    # the negated logit's gradients are the negated gradients: what one map shows, the other hides
    assert not ((pos[0].cam > 0.3) & (neg[0].cam > 0.3)).any()

    code, out, err = _cli("cam", "b1", str(data / "test_opacity_1.png"), "--methods", "gradcam,scorecam",
                          "--target", "normal", "--k", "4", "--out", str(tmp_path / "pngs"), "--json")  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert result["prediction"] == pytest.approx({"normal": 1 - p, "opacity": p}, abs=1e-4)
    assert result["target"] == "normal" and result["true_class"] == "opacity"
    assert [m["method"] for m in result["maps"]] == ["gradcam", "scorecam"]


def test_two_threads_explaining_one_model_get_what_each_gets_alone(run):
    """The Inspect page shares one loaded model between sessions: the model's lock keeps
    one CAM's hooks and gradients from mixing with another's."""
    import threading

    from core.evaluate.predict import load_run_model
    from core.explain.service import explain

    workspace, data = run
    loaded = load_run_model("r1", workspace=workspace)
    images = [np.asarray(Image.open(data / f"test_{c}_{i}.png")) for c in ("normal", "opacity") for i in range(2)]
    methods = ["gradcam", "gradcam++", "scorecam"]
    alone = [explain(loaded, img, methods, "opacity", top_k=4, cache=False) for img in images]
    results: dict[tuple[int, int], list] = {}
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for rep in range(3):
                for i, img in enumerate(images):
                    results[(t, rep * len(images) + i)] = explain(loaded, img, methods, "opacity", top_k=4, cache=False)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    assert len(results) == 3 * 3 * len(images)
    for (_, n), got in results.items():
        for want, res in zip(alone[n % len(images)], got, strict=True):
            assert np.abs(res.cam - want.cam).max() < 1e-4, res.method
    assert _hooks(loaded.model) == 0


def test_the_upload_size_limit_is_set_in_the_streamlit_config():
    import tomllib

    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    limit = config["server"]["maxUploadSize"]  # MB; Streamlit refuses a larger upload itself
    assert isinstance(limit, int) and 1 <= limit <= 2048
