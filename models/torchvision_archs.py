"""torchvision classifiers: ResNet-18/34/50/101/152, DenseNet-121, EfficientNet-B0,
MobileNetV3-Large, with a 1- or 3-channel stem and an n-class head (n = 1: one BCE logit).

ImageNet weights are the V1 sets everywhere: the notebooks used ``pretrained=True``, which
is V1, and DRENet's ResNet-50 body shares the same file. (ResNet-50 V2 scores higher on
ImageNet but comes from a heavily regularised recipe; swap it in here if wanted.)
"""

from __future__ import annotations

import re

import torch
from torch import nn
from torch.nn import functional as F
from torchvision import models as tvm

from models.registry import get_submodule, register_arch


def replace_first_conv(model: nn.Module, dotted: str, in_channels: int) -> None:
    """Swap the stem conv for a fresh one taking ``in_channels``; pretrained weights are
    fitted to it later by summing over RGB (models.pretrained)."""
    old = get_submodule(model, dotted)
    if not isinstance(old, nn.Conv2d):
        raise TypeError(f"{dotted} is a {type(old).__name__}, not a Conv2d")
    if old.in_channels == in_channels:
        return
    new = nn.Conv2d(
        in_channels,
        old.out_channels,
        kernel_size=old.kernel_size,
        stride=old.stride,
        padding=old.padding,
        dilation=old.dilation,
        groups=old.groups,
        bias=old.bias is not None,
    )
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    parent_name, _, child = dotted.rpartition(".")
    parent = get_submodule(model, parent_name) if parent_name else model
    setattr(parent, child, new)


_RESNETS = {
    "resnet18": (tvm.resnet18, tvm.ResNet18_Weights.IMAGENET1K_V1),
    "resnet34": (tvm.resnet34, tvm.ResNet34_Weights.IMAGENET1K_V1),
    "resnet50": (tvm.resnet50, tvm.ResNet50_Weights.IMAGENET1K_V1),
    "resnet101": (tvm.resnet101, tvm.ResNet101_Weights.IMAGENET1K_V1),
    "resnet152": (tvm.resnet152, tvm.ResNet152_Weights.IMAGENET1K_V1),
}


def _register_resnet(name: str) -> None:
    ctor, weights = _RESNETS[name]
    depth = name.removeprefix("resnet")

    @register_arch(
        name,
        target_layers=("layer4",),
        classic_cam=True,
        classifier="fc",
        family="resnet",
        description=f"ResNet-{depth} (torchvision), global average pool + one linear layer",
        first_conv="conv1",
        head=("fc",),
        imagenet_weights=weights,
    )
    def build(n_classes: int, in_channels: int) -> nn.Module:
        model = ctor(weights=None, num_classes=n_classes)
        replace_first_conv(model, "conv1", in_channels)
        return model


for _name in _RESNETS:
    _register_resnet(_name)


class CAMDenseNet(tvm.DenseNet):
    """torchvision's DenseNet applies its last ReLU functionally and in place on the output
    of ``features``; a CAM hook there would see the values change after it fired (on CPU,
    where pytorch-grad-cam's ``.cpu()`` does not copy). Here the ReLU is a module at the end
    of ``features`` and nothing is modified in place, so ``features.relu5`` is exactly what
    the classifier pools. Parameter names are torchvision's."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.features.add_module("relu5", nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(out, 1))


# The published DenseNet checkpoints name layers "norm.1"; module names cannot hold dots now.
_DENSE_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def fix_densenet_keys(state_dict: dict) -> dict:
    fixed = {}
    for key, value in state_dict.items():
        match = _DENSE_OLD_KEY.match(key)
        fixed[match.group(1) + match.group(2) if match else key] = value
    return fixed


@register_arch(
    "densenet121",
    target_layers=("features.relu5",),
    classic_cam=True,
    classifier="classifier",
    family="densenet",
    description="DenseNet-121 (torchvision), global average pool + one linear layer",
    first_conv="features.conv0",
    head=("classifier",),
    imagenet_weights=tvm.DenseNet121_Weights.IMAGENET1K_V1,
    key_fix=fix_densenet_keys,
)
def build_densenet121(n_classes: int, in_channels: int) -> nn.Module:
    model = CAMDenseNet(
        growth_rate=32, block_config=(6, 12, 24, 16), num_init_features=64, num_classes=n_classes
    )
    replace_first_conv(model, "features.conv0", in_channels)
    return model


@register_arch(
    "efficientnet_b0",
    target_layers=("features.8",),
    classic_cam=True,
    classifier="classifier.1",
    family="efficientnet",
    description="EfficientNet-B0 (torchvision), global average pool + dropout + one linear layer",
    first_conv="features.0.0",
    head=("classifier",),
    imagenet_weights=tvm.EfficientNet_B0_Weights.IMAGENET1K_V1,
)
def build_efficientnet_b0(n_classes: int, in_channels: int) -> nn.Module:
    model = tvm.efficientnet_b0(weights=None, num_classes=n_classes)
    replace_first_conv(model, "features.0.0", in_channels)
    return model


@register_arch(
    "mobilenet_v3_large",
    target_layers=("features.16",),
    # Linear-Hardswish-Dropout-Linear after the pool: no single weight row per class.
    classic_cam=False,
    classifier="",
    family="mobilenet",
    description="MobileNetV3-Large (torchvision); two-layer head, so Grad-CAM family only",
    first_conv="features.0.0",
    head=("classifier",),
    imagenet_weights=tvm.MobileNet_V3_Large_Weights.IMAGENET1K_V1,
)
def build_mobilenet_v3_large(n_classes: int, in_channels: int) -> nn.Module:
    model = tvm.mobilenet_v3_large(weights=None, num_classes=n_classes)
    replace_first_conv(model, "features.0.0", in_channels)
    return model
