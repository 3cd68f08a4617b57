"""The architecture registry: every entry builds, trains, exposes its CAM layers; pretrained
weights load from the hub cache or a file, fit 1-channel input, and never run pickles."""

from __future__ import annotations

import ast
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import models
from models import (
    PretrainedWeightsUnavailable,
    UnknownArchError,
    WeightsFileError,
    build_model,
    get_arch,
    get_submodule,
    list_archs,
    pretrained_status,
    register_arch,
)
from models import pretrained as pretrained_mod

REAL_DOWNLOAD = pretrained_mod.download_weights  # the autouse fixture blocks it per test
HEAVY = {"resnet101", "resnet152"}  # slow to build, and hundreds of MB of fake weights


@pytest.fixture(autouse=True)
def hub_dir(tmp_path, monkeypatch) -> Path:
    """An empty torch hub cache per test, and no test can reach the network."""
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))

    def blocked(url, dest, timeout=0):
        raise URLError("network blocked in tests")

    monkeypatch.setattr(pretrained_mod, "download_weights", blocked)
    return hub


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny batches gain nothing from more threads, and on a shared 2-core machine OpenMP's
    spinning threads made this file three times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _loss(logits: torch.Tensor, n_classes: int) -> torch.Tensor:
    if n_classes == 1:
        return F.binary_cross_entropy_with_logits(logits.squeeze(1), torch.tensor([0.0, 1.0]))
    return F.cross_entropy(logits, torch.arange(logits.shape[0]) % n_classes)


def _capture(model: nn.Module, names: tuple[str, ...]) -> tuple[dict[str, torch.Tensor], list]:
    seen: dict[str, torch.Tensor] = {}
    handles = [
        get_submodule(model, name).register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o))
        for name in names
    ]
    return seen, handles


def _grid() -> list:
    """Every architecture x in_channels x n_classes; the deep ResNets differ from ResNet-50
    only in depth, so all but one of their combinations run with the slow tests."""
    return [
        pytest.param(name, c, n, marks=[pytest.mark.slow] if name in HEAVY and (c, n) != (1, 3) else [])
        for name in list_archs()
        for c in (1, 3)
        for n in (1, 3)
    ]


@pytest.mark.parametrize(("name", "in_channels", "n_classes"), _grid())
def test_builds_trains_and_exposes_cam_layers(name, in_channels, n_classes):
    torch.manual_seed(0)
    model = build_model(name, n_classes, in_channels)
    spec = get_arch(name)
    seen, handles = _capture(model, spec.target_layers)
    logits = model(torch.randn(2, in_channels, 64, 64))
    assert logits.shape == (2, n_classes)
    for layer in spec.target_layers:
        assert seen[layer].dim() == 4, f"{name}: {layer} gives {tuple(seen[layer].shape)}"
    _loss(logits, n_classes).backward()
    for pname, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None, f"{name}: no gradient for {pname}"
            assert torch.isfinite(param.grad).all(), f"{name}: non-finite gradient for {pname}"
    for handle in handles:
        handle.remove()


@pytest.mark.parametrize("name", [n for n in list_archs() if get_arch(n).classic_cam])
def test_classic_cam_head_is_gap_plus_linear(name):
    """Classic CAM weights the target map by the classifier's row: valid only if the logits
    are exactly classifier(GAP(target map))."""
    torch.manual_seed(0)
    spec = get_arch(name)
    model = build_model(name, 3, 1).eval()
    seen, _ = _capture(model, spec.target_layers[:1])
    with torch.no_grad():
        logits = model(torch.randn(2, 1, 96, 96))
        pooled = seen[spec.target_layers[0]].mean(dim=(2, 3))
        rebuilt = get_submodule(model, spec.classifier)(pooled)
    assert isinstance(get_submodule(model, spec.classifier), nn.Linear)
    torch.testing.assert_close(rebuilt, logits, rtol=1e-4, atol=1e-5)


def _slow_if_heavy(names: list[str]) -> list:
    return [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in names]


@pytest.mark.parametrize("name", _slow_if_heavy(list_archs()))
def test_channels_last_bf16_autocast(name):
    torch.manual_seed(0)
    model = build_model(name, 2, 1).to(memory_format=torch.channels_last)
    x = torch.randn(2, 1, 64, 64).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
    assert logits.shape == (2, 2)
    _loss(logits.float(), 2).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", ["resnet18", "densenet121", "mobilenet_v3_large", "drenet"])
def test_grad_cam_runs_on_the_target_layers(name):
    """pytorch-grad-cam hooks the named layers, gets activations and gradients, and makes a
    finite map (a random model's map may be all zero for one class, not for both)."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    model = build_model(name, 2, 1).eval()
    layers = [get_submodule(model, layer) for layer in get_arch(name).target_layers]
    image = torch.rand(2, 1, 96, 96)
    with GradCAM(model=model, target_layers=layers) as cam:
        heatmaps = cam(input_tensor=image, targets=[ClassifierOutputTarget(0), ClassifierOutputTarget(1)])
    assert heatmaps.shape == (2, 96, 96)
    assert np.isfinite(heatmaps).all() and heatmaps.max() > 0


def _fake_imagenet_file(name: str, hub: Path) -> dict[str, torch.Tensor]:
    """A random ImageNet-shaped checkpoint under the file name torchvision would use, with
    non-trivial BatchNorm statistics so that loading them matters."""
    source = "resnet50" if name == "drenet" else name
    state = get_arch(source).factory(1000, 3).state_dict()
    for key, value in state.items():
        if key.endswith("running_mean"):
            state[key] = torch.randn_like(value) * 0.1
        elif key.endswith("running_var"):
            state[key] = torch.rand_like(value) + 0.5
    on_disk = dict(state)
    if name == "densenet121":  # the published file predates BN counters and uses "norm.1" key names
        on_disk = {
            k.replace(".norm1.", ".norm.1.").replace(".conv2.", ".conv.2."): v
            for k, v in state.items()
            if not k.endswith("num_batches_tracked")
        }
    path = Path(pretrained_status(name).path)
    assert path.parent == hub / "checkpoints"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(on_disk, path)
    return state


@pytest.mark.parametrize("name", _slow_if_heavy(list_archs()))
def test_imagenet_from_hub_cache_and_gray_input_matches_rgb(name, hub_dir):
    spec = get_arch(name)
    state = _fake_imagenet_file(name, hub_dir)
    assert pretrained_status(name).available
    rgb = build_model(name, 2, 3, "imagenet").eval()
    gray = build_model(name, 2, 1, "imagenet").eval()

    loaded = rgb.state_dict()
    for key, value in state.items():  # every tensor of the file that fits is in the model
        key = spec.weights_prefix + key
        if key in loaded and loaded[key].shape == value.shape:
            assert torch.equal(loaded[key], value), key

    stem = f"{spec.first_conv}.weight"
    src_stem = stem.removeprefix(spec.weights_prefix)
    torch.testing.assert_close(loaded[stem], state[src_stem])
    torch.testing.assert_close(gray.state_dict()[stem], state[src_stem].sum(dim=1, keepdim=True))
    # Heads (and DRENet's FPN) are fresh in both; give them the same values to compare the rest.
    gray.load_state_dict({k: v for k, v in rgb.state_dict().items() if k != stem}, strict=False)

    image = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(gray(image), rgb(image.repeat(1, 3, 1, 1)), rtol=1e-4, atol=1e-4)


def test_missing_imagenet_weights_say_where_to_put_the_file(hub_dir):
    status = pretrained_status("resnet50")
    expected = hub_dir / "checkpoints" / "resnet50-0676ba61.pth"
    assert not status.available
    assert status.path == str(expected)
    assert str(expected) in status.message and status.size_mb and status.size_mb > 90
    with pytest.raises(PretrainedWeightsUnavailable) as err:
        build_model("resnet50", 2, 1, "imagenet")
    assert str(expected) in str(err.value)
    assert "network blocked" in str(err.value)


def test_unreachable_host_fails_fast_without_downloading(tmp_path, monkeypatch):
    def no_connection(*args, **kwargs):
        raise OSError("no route to host")

    def must_not_run(*args, **kwargs):
        raise AssertionError("download attempted")

    monkeypatch.delenv("CHESTLAB_OFFLINE", raising=False)  # the suite's own guard (tests/conftest.py)
    monkeypatch.setattr(pretrained_mod.socket, "create_connection", no_connection)
    monkeypatch.setattr(torch.hub, "download_url_to_file", must_not_run)
    with pytest.raises(URLError, match="cannot reach download.pytorch.org"):
        REAL_DOWNLOAD(
            "https://download.pytorch.org/models/resnet18-f37072fd.pth", tmp_path / "x.pth", timeout=1
        )


@pytest.mark.parametrize("value, attempted", [("1", False), ("true", False), ("0", True), ("", True)])
def test_chestlab_offline_skips_the_download_attempt(tmp_path, monkeypatch, value, attempted):
    tried = []
    monkeypatch.setenv("CHESTLAB_OFFLINE", value)
    monkeypatch.setattr(pretrained_mod, "_reachable", lambda *a: tried.append(a) or False)
    with pytest.raises(URLError, match="CHESTLAB_OFFLINE is set" if not attempted else "cannot reach"):
        REAL_DOWNLOAD("https://download.pytorch.org/models/resnet18-f37072fd.pth", tmp_path / "x.pth", timeout=1)
    assert bool(tried) == attempted


def test_state_dict_file_with_other_head_loads_with_head_replaced(tmp_path):
    torch.manual_seed(0)
    trained = build_model("resnet18", 5, 3)
    path = tmp_path / "five_classes.pt"
    torch.save({"state_dict": trained.state_dict(), "classes": ["a", "b", "c", "d", "e"]}, path)

    model = build_model("resnet18", 2, 1, str(path))
    assert model.fc.out_features == 2
    torch.testing.assert_close(model.layer3[0].conv1.weight, trained.layer3[0].conv1.weight)
    torch.testing.assert_close(model.conv1.weight, trained.conv1.weight.sum(dim=1, keepdim=True))
    fresh = models.load_pretrained(build_model("resnet18", 2, 1), get_arch("resnet18"), str(path))
    assert fresh == ["fc.weight", "fc.bias"]


def test_weights_of_another_architecture_are_refused(tmp_path):
    path = tmp_path / "mobilenet.pt"
    torch.save(build_model("mobilenet_v3_large", 2, 3).state_dict(), path)
    with pytest.raises(WeightsFileError, match=f"{path}.*does not fit resnet18"):
        build_model("resnet18", 2, 1, str(path))


class _Payload:
    """Unpickling this would run code (create a file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickled_model_file_is_refused_not_executed(tmp_path):
    whole_model = tmp_path / "whole_model.pt"
    torch.save(build_model("resnet18", 2, 1), whole_model)
    with pytest.raises(WeightsFileError, match="holds a pickled model object .*ResNet.*refusing to execute"):
        build_model("resnet18", 2, 1, str(whole_model))

    marker = tmp_path / "executed"
    malicious = tmp_path / "malicious.pt"
    torch.save({"fc.weight": _Payload(marker)}, malicious)
    with pytest.raises(WeightsFileError, match="refusing to execute"):
        build_model("resnet18", 2, 1, str(malicious))
    assert not marker.exists()


def test_missing_weights_file_is_named(tmp_path):
    with pytest.raises(WeightsFileError, match="nope.pt: no such weights file"):
        build_model("resnet18", 2, 1, str(tmp_path / "nope.pt"))


def test_unknown_architecture_lists_the_valid_ones():
    with pytest.raises(UnknownArchError) as err:
        build_model("resnet19", 2)
    assert isinstance(err.value, ValueError)
    for name in list_archs():
        assert name in str(err.value)


def test_duplicate_registration_raises():
    before = list_archs()
    with pytest.raises(ValueError, match="duplicate architecture 'resnet18'"):

        @register_arch(
            "resnet18",
            target_layers=("layer4",),
            classic_cam=False,
            classifier="",
            family="x",
            description="x",
            first_conv="conv1",
            head=("fc",),
        )
        def build(n_classes: int, in_channels: int) -> nn.Module:
            return nn.Linear(1, n_classes)

    assert list_archs() == before
    assert get_arch("resnet18").family == "resnet"


def test_single_logit_drenet_can_predict_the_negative_class():
    """The notebook's ReLU'd level logits are >= 0; as one BCE logit that is p >= 0.5 always."""
    torch.manual_seed(0)
    model = build_model("drenet", 1, 1)
    with torch.no_grad():
        logits = model(torch.randn(4, 1, 64, 64))
    assert (logits < 0).any() and (logits > 0).any()


def test_models_never_import_core_or_streamlit():
    """Imports go pages -> core -> models; models runs in the training process alone."""
    package = Path(models.__file__).parent
    for source in package.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                roots = [(node.module or "").split(".")[0]]
            else:
                continue
            assert not {"core", "streamlit"} & set(roots), f"{source.name} imports {roots}"
