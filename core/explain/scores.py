"""How good is a map: localisation against lesion boxes, and faithfulness to the model.

Maps and boxes live in map coordinates: the model's input, the image squashed to S x S.
``boxes_to_map`` scales a dataset's boxes (pixels of the original W x H image) by
(S / W, S / H).

- ``energy_in_box``: the share of the map's (non-negative) mass inside the union of the
  boxes; 1 = everything inside. A blank map scores 0. Compare it with the boxes' share of
  the image (``box_area_share``): a uniform map scores exactly that.
- ``pointing_game`` (Zhang et al. 2016): a hit when the map's peak lies inside a box or
  within ``tolerance`` pixels of one. The paper allows 15 pixels on images of ~500 px;
  the default here is the same 3% of the map's side (7 px at 224). A blank map is a miss.
- ``deletion_auc`` (the default faithfulness score; Petsiuk et al. 2018, RISE): the most
  relevant pixels are replaced by a blurred copy of the image in ``steps`` equal steps,
  and the target class's probability is integrated over the deleted share (0..1).
  **Lower is better**: a faithful map names the pixels whose loss hurts the prediction first.
- ``road_score`` (Rong et al. 2022, pytorch-grad-cam's ``ROADCombined``): the mean over
  percentiles of (score after removing the least relevant pixels - score after removing
  the most relevant), removed pixels filled by noisy linear imputation. **Higher is
  better**. It solves a sparse system per percentile (about a second each at 224 px), so it
  is an option, not the default.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from core.errors import ConfigError
from core.explain.methods import LogitTarget

POINTING_TOLERANCE = 0.03  # of the map's longer side (15 px of ~500 in Zhang et al.)
DELETION_STEPS = 10
ROAD_PERCENTILES = (20, 40, 60, 80)


@dataclass(frozen=True)
class Faithfulness:
    name: str
    higher_is_better: bool
    description: str


FAITHFULNESS = {
    "deletion": Faithfulness(
        "deletion",
        False,
        "deletion AUC: target probability while the most relevant pixels are blurred away (lower is better)",
    ),
    "road": Faithfulness(
        "road",
        True,
        "ROAD combined: score drop removing least minus most relevant pixels, imputed (higher is better)",
    ),
}
DEFAULT_FAITHFULNESS = "deletion"


def get_faithfulness(name: str) -> Faithfulness:
    try:
        return FAITHFULNESS[name]
    except KeyError:
        raise ConfigError(f"faithfulness score {name!r} unknown; valid: {', '.join(FAITHFULNESS)}") from None


# ---------------------------------------------------------------- boxes

Box = tuple[float, float, float, float]  # x, y, width, height


def boxes_to_map(
    boxes: Iterable[Sequence[float]],
    image_width: int,
    image_height: int,
    map_width: int,
    map_height: int | None = None,
) -> list[Box]:
    """(x, y, w, h) boxes in pixels of the original image -> pixels of the squashed map."""
    map_height = map_height or map_width
    sx, sy = map_width / image_width, map_height / image_height
    return [(float(x) * sx, float(y) * sy, float(w) * sx, float(h) * sy) for x, y, w, h in boxes]


def box_mask(shape: tuple[int, int], boxes: Iterable[Sequence[float]]) -> np.ndarray:
    """Boolean mask of the union of (x, y, w, h) boxes; a pixel is inside when its centre is."""
    height, width = shape
    mask = np.zeros((height, width), dtype=bool)
    for x, y, w, h in boxes:
        x0, y0 = max(0, int(np.floor(x + 0.5))), max(0, int(np.floor(y + 0.5)))
        x1, y1 = min(width, int(np.floor(x + w + 0.5))), min(height, int(np.floor(y + h + 0.5)))
        if x1 > x0 and y1 > y0:
            mask[y0:y1, x0:x1] = True
    return mask


def box_area_share(shape: tuple[int, int], boxes: Iterable[Sequence[float]]) -> float:
    """What a uniform map would score on ``energy_in_box``."""
    return float(box_mask(shape, boxes).mean())


def energy_in_box(cam: np.ndarray, boxes: Iterable[Sequence[float]]) -> float:
    cam = np.clip(np.nan_to_num(np.asarray(cam, dtype=np.float64)), 0.0, None)
    total = cam.sum()
    if total <= 0:
        return 0.0
    return float(cam[box_mask(cam.shape, boxes)].sum() / total)


def pointing_game(cam: np.ndarray, boxes: Iterable[Sequence[float]], tolerance: float | None = None) -> bool:
    """Whether the peak (the first maximum in raster order) falls within ``tolerance``
    pixels of a box (default: 3% of the map's longer side)."""
    cam = np.nan_to_num(np.asarray(cam, dtype=np.float64))
    if cam.size == 0 or cam.max() <= cam.min():
        return False
    tol = pointing_tolerance(cam.shape) if tolerance is None else float(tolerance)
    py, px = np.unravel_index(int(np.argmax(cam)), cam.shape)
    return bool(squared_box_distance(py + 0.5, px + 0.5, boxes) <= tol * tol)  # the peak pixel's centre


def pointing_tolerance(shape: tuple[int, ...]) -> float:
    """The pointing game's default tolerance in pixels for a map of ``shape``."""
    return POINTING_TOLERANCE * max(shape)


def squared_box_distance(cy: Any, cx: Any, boxes: Iterable[Sequence[float]]) -> np.ndarray:
    """Squared distance from points ``(cy, cx)`` (scalars or arrays) to the nearest box
    ``(x, y, w, h)``: 0 inside a box, inf with no box."""
    cy, cx = np.asarray(cy, dtype=np.float64), np.asarray(cx, dtype=np.float64)
    best = np.full(np.broadcast(cy, cx).shape, np.inf)
    for x, y, w, h in boxes:
        dx = np.maximum(np.maximum(x - cx, cx - (x + w)), 0.0)
        dy = np.maximum(np.maximum(y - cy, cy - (y + h)), 0.0)
        best = np.minimum(best, dx * dx + dy * dy)
    return best


# ---------------------------------------------------------------- faithfulness


def _blurred(x: torch.Tensor) -> torch.Tensor:
    from torchvision.transforms.functional import gaussian_blur

    sigma = max(1.0, x.shape[-1] / 20)
    kernel = int(2 * round(3 * sigma) + 1)
    kernel = min(kernel, 2 * (min(x.shape[-2:]) // 2) - 1)
    return gaussian_blur(x, [kernel, kernel], [sigma, sigma])


@torch.inference_mode()
def deletion_auc(
    model: nn.Module, x: torch.Tensor, cam: np.ndarray, target: LogitTarget, steps: int = DELETION_STEPS
) -> float:
    """Area under the target probability as the most relevant pixels are blurred away, in
    ``steps`` equal steps (one batched forward of steps + 1 images). Lower is better."""
    if steps < 1:
        raise ConfigError(f"deletion steps must be >= 1, got {steps}")
    height, width = x.shape[-2:]
    if cam.shape != (height, width):
        raise ValueError(f"map {cam.shape} and input {(height, width)} differ in size")
    order = np.argsort(-np.asarray(cam, dtype=np.float64).ravel(), kind="stable")
    rank = np.empty(order.size, dtype=np.int64)
    rank[order] = np.arange(order.size)
    rank_t = torch.from_numpy(rank.reshape(height, width)).to(x.device)
    cuts = torch.tensor([round(i * order.size / steps) for i in range(steps + 1)], device=x.device)
    deleted = (rank_t[None] < cuts[:, None, None]).to(x.dtype)[:, None]  # (steps+1, 1, H, W)
    batch = x * (1 - deleted) + _blurred(x) * deleted
    model.eval()
    probs = target.probability(model(batch)).cpu().numpy().astype(np.float64)
    return float(np.trapezoid(probs, dx=1.0 / steps))


def road_score(
    model: nn.Module,
    x: torch.Tensor,
    cam: np.ndarray,
    target: LogitTarget,
    percentiles: Sequence[int] = ROAD_PERCENTILES,
) -> float:
    """pytorch-grad-cam's ROADCombined on the target probability. Higher is better."""
    from pytorch_grad_cam.metrics.road import ROADCombined

    class _Probability:
        def __call__(self, output: torch.Tensor) -> torch.Tensor:
            return target.probability(output[None])[0]

    model.eval()
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        # the library's imputer hands torch tensors to numpy functions (a numpy 2 deprecation)
        warnings.simplefilter("ignore", DeprecationWarning)
        value = ROADCombined(percentiles=list(percentiles))(
            x, cam[None].astype(np.float32), [_Probability()], model
        )
    return float(np.asarray(value).ravel()[0])


def faithfulness(name: str, model: nn.Module, x: torch.Tensor, cam: np.ndarray, target: LogitTarget) -> float:
    get_faithfulness(name)
    if name == "road":
        return road_score(model, x, cam, target)
    return deletion_auc(model, x, cam, target)


__all__ = [
    "DEFAULT_FAITHFULNESS",
    "FAITHFULNESS",
    "Faithfulness",
    "box_area_share",
    "box_mask",
    "boxes_to_map",
    "deletion_auc",
    "energy_in_box",
    "faithfulness",
    "get_faithfulness",
    "pointing_game",
    "road_score",
]
