"""DRENet, as the DRENet CT notebook built it: ResNet-50 + FPN, per FPN level a 1x1 conv to
n classes + BatchNorm + ReLU + global average pool, a linear attention over the
concatenated level predictions, softmax over levels, weighted sum of the level logits.

Choices that differ from ``resnet_fpn_backbone``'s defaults, and why:
- plain BatchNorm and every layer trainable (``trainable_layers=5``), not frozen BatchNorm
  with conv1/layer1 frozen: frozen BN is an identity with random init, so a run from
  scratch would have no normalisation. Freezing is the training loop's freeze policy.
- with one output (a BCE logit) the level heads have no ReLU: a ReLU'd logit is >= 0,
  i.e. p >= 0.5 for every image. With n >= 2 the softmax only sees differences, so the
  notebook's ReLU stays.

CAM: ``levels.0`` ... ``levels.pool`` are identity modules on the five FPN outputs (strides
4, 8, 16, 32, 64; 256 channels each), so pytorch-grad-cam can hook spatial maps at every
level the attention mixes. Any input of 32 px or more works (the FPN resizes its top-down
path to each lateral's size, so sizes need not divide by 32); at <= 64 px the ``pool``
level is 1x1 and its head's BatchNorm then needs a batch of at least 2 in training.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision import models as tvm
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

from models.registry import register_arch
from models.torchvision_archs import replace_first_conv

LEVELS = ("0", "1", "2", "3", "pool")
FPN_CHANNELS = 256


def _level_head(n_classes: int) -> nn.Sequential:
    activation = nn.ReLU() if n_classes > 1 else nn.Identity()
    return nn.Sequential(
        nn.Conv2d(FPN_CHANNELS, n_classes, kernel_size=1),
        nn.BatchNorm2d(n_classes),
        activation,
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(1),
    )


class DRENet(nn.Module):
    def __init__(self, n_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.backbone = resnet_fpn_backbone(
            backbone_name="resnet50", weights=None, norm_layer=nn.BatchNorm2d, trainable_layers=5
        )
        replace_first_conv(self.backbone.body, "conv1", in_channels)
        self.levels = nn.ModuleDict({name: nn.Identity() for name in LEVELS})
        self.level_heads = nn.ModuleDict({name: _level_head(n_classes) for name in LEVELS})
        self.attention = nn.Linear(len(LEVELS) * n_classes, len(LEVELS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        level_logits = torch.stack(
            [self.level_heads[name](self.levels[name](features[name])) for name in LEVELS], dim=1
        )  # (B, levels, classes)
        weights = torch.softmax(self.attention(level_logits.flatten(1)), dim=1)
        return (weights.unsqueeze(-1) * level_logits).sum(dim=1)


@register_arch(
    "drenet",
    target_layers=tuple(f"levels.{name}" for name in LEVELS),
    classic_cam=False,
    classifier="",
    family="drenet",
    description="DRENet: ResNet-50 + FPN, a 1x1 conv head per level, softmax attention over the 5 levels",
    first_conv="backbone.body.conv1",
    # The FPN is not in an ImageNet checkpoint, so it belongs to the part trained on the task.
    head=("backbone.fpn", "level_heads", "attention"),
    imagenet_weights=tvm.ResNet50_Weights.IMAGENET1K_V1,
    weights_prefix="backbone.body.",
)
def build_drenet(n_classes: int, in_channels: int) -> nn.Module:
    return DRENet(n_classes, in_channels)
