"""Pictures of maps: a colormap over the radiograph, lesion boxes, and a PNG grid.

Overlays are cheap and computed from a cached map, so changing the opacity or the colormap
never recomputes a CAM. Colormaps are matplotlib's lookup tables (256 entries), applied
with one numpy index.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from core.errors import ConfigError

COLORMAPS = ("jet", "turbo", "inferno", "viridis", "magma", "plasma", "hot")
DEFAULT_COLORMAP = "jet"
BOX_COLOR = (0, 255, 0)


@lru_cache(maxsize=16)
def colormap_table(name: str) -> np.ndarray:
    """(256, 3) uint8 lookup table of a matplotlib colormap."""
    if name not in COLORMAPS:
        raise ConfigError(f"colormap {name!r} unknown; valid: {', '.join(COLORMAPS)}")
    from matplotlib import colormaps

    table = colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3]
    out = np.round(table * 255).astype(np.uint8)
    out.setflags(write=False)
    return out


def resize_map(cam: np.ndarray, width: int, height: int) -> np.ndarray:
    """A float map resized (bilinear) to ``width`` x ``height``, e.g. back to the image's
    own aspect from the model's square input."""
    cam = np.asarray(cam, dtype=np.float32)
    if cam.shape == (height, width):
        return cam
    return np.asarray(Image.fromarray(cam, mode="F").resize((width, height), Image.Resampling.BILINEAR))


def to_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ValueError(f"expected an HxW or HxWx3 image, got shape {image.shape}")


def overlay(
    image: np.ndarray, cam: np.ndarray, opacity: float = 0.5, colormap: str = DEFAULT_COLORMAP
) -> np.ndarray:
    """The map in ``colormap`` blended over the image (gray or RGB uint8) -> RGB uint8.
    The map is resized to the image when their sizes differ; ``opacity`` 0 shows the image
    alone, 1 the map alone."""
    if not 0.0 <= opacity <= 1.0:
        raise ConfigError(f"opacity must be between 0 and 1, got {opacity}")
    rgb = to_rgb(image)
    height, width = rgb.shape[:2]
    cam = np.clip(np.nan_to_num(resize_map(cam, width, height)), 0.0, 1.0)
    colored = colormap_table(colormap)[np.round(cam * 255).astype(np.uint8)]
    blended = (1.0 - opacity) * rgb.astype(np.float32) + opacity * colored.astype(np.float32)
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def draw_boxes(
    rgb: np.ndarray,
    boxes: Iterable[Sequence[float]],
    color: tuple[int, int, int] = BOX_COLOR,
    width: int | None = None,
) -> np.ndarray:
    """A copy of ``rgb`` with (x, y, w, h) boxes outlined (pixels of this image)."""
    out = Image.fromarray(to_rgb(rgb).copy())
    line = width or max(1, round(max(out.size) / 224))
    draw = ImageDraw.Draw(out)
    for x, y, w, h in boxes:
        draw.rectangle(
            [float(x), float(y), float(x + w) - 1, float(y + h) - 1], outline=tuple(color), width=line
        )
    return np.asarray(out).copy()


def grid_png(
    cells: Sequence[np.ndarray | None],
    rows: int,
    cols: int,
    titles: Sequence[str] | None = None,
    cell_size: int = 256,
    pad: int = 4,
) -> bytes:
    """One PNG of ``rows`` x ``cols`` cells (row-major; None leaves a cell blank), each fitted
    into ``cell_size`` with its aspect kept and an optional title above it."""
    from core.data.images import encode_png

    if len(cells) > rows * cols:
        raise ValueError(f"{len(cells)} cells do not fit a {rows} x {cols} grid")
    font = ImageFont.load_default()
    title_h = 14 if titles else 0
    canvas = Image.new(
        "RGB", (cols * (cell_size + pad) + pad, rows * (cell_size + title_h + pad) + pad), "white"
    )
    draw = ImageDraw.Draw(canvas)
    for i, cell in enumerate(cells):
        r, c = divmod(i, cols)
        x0, y0 = pad + c * (cell_size + pad), pad + r * (cell_size + title_h + pad)
        if titles and i < len(titles) and titles[i]:
            draw.text((x0, y0), _fit(draw, font, titles[i], cell_size), fill=(0, 0, 0), font=font)
        if cell is None:
            continue
        img = Image.fromarray(to_rgb(cell))
        img.thumbnail((cell_size, cell_size), Image.Resampling.LANCZOS)
        canvas.paste(img, (x0 + (cell_size - img.width) // 2, y0 + title_h + (cell_size - img.height) // 2))
    return encode_png(np.asarray(canvas))


def _fit(draw: ImageDraw.ImageDraw, font: ImageFont.ImageFont, text: str, width: int) -> str:
    text = " ".join(str(text).split())
    while text and draw.textlength(text, font=font) > width:
        text = text[:-2] + "~" if len(text) > 2 else ""
    return text


__all__ = [
    "COLORMAPS",
    "DEFAULT_COLORMAP",
    "colormap_table",
    "draw_boxes",
    "grid_png",
    "overlay",
    "resize_map",
    "to_rgb",
]
