"""Fold eval-mode BatchNorm into the convolution before it, for inference copies.

In eval mode a BatchNorm2d is an affine map per channel, so ``bn(conv(x))`` equals one
convolution with scaled weights and a bias: the BatchNorm pass over the activations (a
memory-bound sweep per layer) disappears. Score-CAM runs hundreds of forward passes per map,
where this is worth 6-27% (512 masked forwards of ResNet-18 at 224 px in bf16: 2.58 s
unfolded at batch 32, 3.27 s at 64; folded 2.43 s at either).

The pairs are found by tracing the model with torch.fx; the folding itself is torch's own
``fuse_conv_bn_eval``. Unlike ``torch.fx.experimental.optimization.fuse``, the model keeps
its module tree (the conv is replaced in place, the BatchNorm by ``nn.Identity``), so hooks
on named layers (``layer4``, a block's ``bn2``) still fire with the same values.
"""

from __future__ import annotations

from collections import Counter

from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(conv, batchnorm) module names where the BatchNorm2d is the only user of the
    Conv2d's output and both are called exactly once. Empty if fx cannot trace the model
    (data-dependent control flow in its forward)."""
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception:  # noqa: BLE001 - any tracing failure means: leave the model as it is
        return []
    modules = dict(model.named_modules())
    calls = Counter(node.target for node in graph.nodes if node.op == "call_module")
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.BatchNorm2d):
            continue
        src = node.args[0] if node.args else None
        if not (isinstance(src, fx.Node) and src.op == "call_module"):
            continue
        conv, bn = modules.get(src.target), modules[node.target]
        if not isinstance(conv, nn.Conv2d) or len(src.users) != 1:
            continue
        if calls[src.target] != 1 or calls[node.target] != 1 or bn.running_mean is None:
            continue  # shared modules, or a BatchNorm that uses batch statistics in eval
        pairs.append((str(src.target), str(node.target)))
    return pairs


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every foldable BatchNorm2d of an eval-mode ``model`` into its conv, in place;
    returns how many were folded. Outputs are unchanged up to float rounding."""
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode: training BatchNorm uses batch statistics")
    pairs = conv_bn_pairs(model)
    for conv_name, bn_name in pairs:
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        fused = fuse_conv_bn_eval(conv, bn)
        fused.requires_grad_(False)
        model.set_submodule(conv_name, fused)
        model.set_submodule(bn_name, nn.Identity())
    return len(pairs)


__all__ = ["conv_bn_pairs", "fold_batchnorm"]
