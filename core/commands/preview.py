"""``python -m core preview IMAGE --out FILE.png``: an image (DICOM too) as the app shows it."""

from __future__ import annotations

import argparse
from typing import Any

from core.cli import command


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", metavar="IMAGE", help="PNG, JPEG, BMP, TIFF or DICOM file (any extension)")
    p.add_argument("--out", required=True, metavar="FILE.png", help="PNG file to write")
    p.add_argument(
        "--size", type=int, metavar="N", help="resize so the longest side is N pixels (aspect kept)"
    )


def _render(data: dict[str, Any]) -> str:
    return f"wrote a {data['width']} x {data['height']} PNG from {data['source_format']}"


@command("preview", "write an image (DICOM too) as the app shows it, as PNG", _arguments, _render)
def run(args: argparse.Namespace) -> dict[str, Any]:
    from core.data.images import encode_png, preview
    from core.errors import ConfigError
    from core.fileio import atomic_write_bytes

    if args.size is not None and args.size <= 0:
        raise ConfigError(f"--size must be a positive number of pixels, got {args.size}")
    img, source_format = preview(args.image, args.size)
    atomic_write_bytes(args.out, encode_png(img))
    height, width = img.shape[:2]
    return {"width": width, "height": height, "source_format": source_format}
