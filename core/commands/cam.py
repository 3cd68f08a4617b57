"""``python -m core cam``: CAM overlays of one image as PNG files, or the methods' scores
over a split's images with lesion boxes.

    python -m core cam RUN_ID IMAGE [--methods m1,m2] [--target CLASS] [--layer NAME] [--out DIR]
    python -m core cam RUN_ID --split test [--methods m1,m2] [--limit N] [--faithfulness deletion|road]
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from core.cli import command

DEFAULT_METHODS = ("cam", "gradcam", "gradcam++", "scorecam")
MAX_PNG_SIDE = 1024


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_id", metavar="RUN_ID", help="the run whose checkpoint explains")
    p.add_argument("image", nargs="?", metavar="IMAGE", help="an image file (PNG, JPEG, DICOM, ...)")
    p.add_argument(
        "--split", metavar="S", help="score the methods over this split's images with lesion boxes"
    )
    p.add_argument(
        "--methods",
        metavar="M1,M2",
        help="comma-separated CAM methods (default: cam where the head "
        "allows it, gradcam, gradcam++, scorecam); valid: cam, gradcam, gradcam++, xgradcam, layercam, "
        "hirescam, eigencam, ablationcam, scorecam",
    )
    p.add_argument(
        "--target",
        default="predicted",
        metavar="CLASS",
        help="class to explain: predicted (default), true, a class name or index",
    )
    p.add_argument(
        "--layer", metavar="NAME", help="target layer(s), comma-separated (default: the architecture's)"
    )
    p.add_argument(
        "--k", type=int, metavar="K", help="Score-CAM fast mode: channels scored (0 = all; default 32)"
    )
    p.add_argument(
        "--checkpoint", choices=("best", "last"), default="best", help="which checkpoint (default best)"
    )
    p.add_argument("--out", metavar="DIR", help="folder for the PNGs (default <run folder>/cam)")
    p.add_argument("--opacity", type=float, default=0.5, help="overlay opacity 0..1 (default 0.5)")
    p.add_argument("--colormap", default="jet", help="jet, turbo, inferno, viridis, magma, plasma, hot")
    p.add_argument("--limit", type=int, metavar="N", help="--split: score the first N images only")
    p.add_argument(
        "--faithfulness",
        default="deletion",
        help="--split: deletion (AUC, lower is better; default) or road (higher is better)",
    )


def _render(data: dict[str, Any]) -> str:
    if "methods" in data:
        lines = [f"{'method':<12} {'images':>6} {'energy':>7} {'pointing':>8} {'faithful':>9} {'s/image':>8}"]
        for r in data["methods"]:
            lines.append(
                f"{r['method']:<12} {r['n_images']:>6} {r['energy_in_box']:>7.3f} {r['pointing_game']:>8.3f} "
                f"{r['faithfulness']:>9.3f} {r['seconds_per_image']:>8.2f}"
            )
        lines.append(f"faithfulness: {data['faithfulness']['description']}")
        return "\n".join(lines)
    probs = ", ".join(f"{c} {p:.3f}" for c, p in data["prediction"].items())
    lines = [f"prediction: {probs}; explaining {data['target']}"]
    for m in data["maps"]:
        extra = ""
        if "energy_in_box" in m:
            extra = f"  energy in box {m['energy_in_box']:.2f}, pointing game {'hit' if m['pointing_game'] else 'miss'}"
        lines.append(f"{m['method']:<12} {m['seconds']:6.2f} s  {m['png']}{extra}")
    return "\n".join(lines)


@command(
    "cam",
    "CAM overlays of an image as PNG, or CAM scores over a split with lesion boxes",
    _arguments,
    _render,
)
def run(args: argparse.Namespace) -> dict[str, Any]:
    from core.errors import ConfigError, NotFoundError
    from core.evaluate.predict import load_run_model
    from core.runs import run_dir

    if (args.image is None) == (args.split is None):
        raise ConfigError("give either an IMAGE or --split S (not both)")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {args.limit}")
    folder = run_dir(args.run_id)
    if not folder.is_dir():
        raise NotFoundError(f"no run {args.run_id!r} in {folder.parent}")
    loaded = load_run_model(args.run_id, which=args.checkpoint)
    methods = _methods(args.methods, loaded.arch)
    if args.split is not None:
        return _split(args, loaded, methods)
    return _image(args, loaded, methods, folder)


def _methods(text: str | None, arch: str) -> list[str]:
    from core.errors import ConfigError
    from core.explain.methods import get_method
    from models import get_arch

    if not text:
        return [m for m in DEFAULT_METHODS if m != "cam" or get_arch(arch).classic_cam]
    names = [m.strip().lower() for m in text.split(",") if m.strip()]
    if not names:
        raise ConfigError("--methods is empty")
    for m in names:
        get_method(m)  # unknown names raise, listing the valid ones
    return names


def _split(args: argparse.Namespace, loaded: Any, methods: list[str]) -> dict[str, Any]:
    from core.explain.scorecam import DEFAULT_TOP_K
    from core.explain.scores import get_faithfulness
    from core.explain.service import score_split
    from core.progress import tqdm_progress

    metric = get_faithfulness(args.faithfulness)
    top_k = DEFAULT_TOP_K if args.k is None else args.k
    with tqdm_progress("scoring", unit="map", enabled=sys.stderr.isatty()) as progress:
        result = score_split(
            loaded,
            args.split,
            methods,
            limit=args.limit,
            layer=args.layer,
            faithfulness=metric.name,
            top_k=top_k,
            progress=progress,
        )
    return {
        "methods": result.table,
        "faithfulness": {
            "metric": metric.name,
            "higher_is_better": metric.higher_is_better,
            "description": metric.description,
        },
    }


def _image(args: argparse.Namespace, loaded: Any, methods: list[str], folder: Any) -> dict[str, Any]:
    from pathlib import Path

    from core.data.images import encode_png, read_gray
    from core.explain import overlay as ov
    from core.explain import scores as sc
    from core.explain.scorecam import DEFAULT_TOP_K
    from core.explain.service import explain, image_info, predict
    from core.fileio import atomic_write_bytes

    ov.colormap_table(args.colormap)  # a bad colormap fails before any work
    image = read_gray(args.image)
    info = image_info(loaded, args.image)
    top_k = DEFAULT_TOP_K if args.k is None else args.k
    probs = predict(loaded, image)
    results = explain(
        loaded,
        image,
        methods,
        args.target,
        args.layer,
        true_index=info.true_index if info else None,
        top_k=top_k,
    )
    out = Path(args.out) if args.out else folder / "cam"
    height, width = image.shape
    scale = min(1.0, MAX_PNG_SIDE / max(height, width))
    shown_w, shown_h = max(1, round(width * scale)), max(1, round(height * scale))
    from core.data.images import resize

    shown = resize(image, shown_w, shown_h)
    boxes = info.boxes if info else []
    map_boxes = sc.boxes_to_map(boxes, width, height, loaded.img_size)
    shown_boxes = sc.boxes_to_map(boxes, width, height, shown_w, shown_h)
    stem = Path(args.image).stem
    maps = []
    for r in results:
        rgb = ov.overlay(shown, r.cam, args.opacity, args.colormap)
        if shown_boxes:
            rgb = ov.draw_boxes(rgb, shown_boxes)
        png = out / f"{stem}_{r.method}_{_safe(r.target_class)}.png"
        atomic_write_bytes(png, encode_png(rgb))
        entry: dict[str, Any] = {"method": r.method, "png": os.fspath(png), "seconds": round(r.seconds, 4)}
        if r.top_k:
            entry["k"] = r.top_k
        if map_boxes:
            entry["energy_in_box"] = sc.energy_in_box(r.cam, map_boxes)
            entry["pointing_game"] = bool(sc.pointing_game(r.cam, map_boxes))
        maps.append(entry)
    data: dict[str, Any] = {
        "prediction": {c: float(p) for c, p in zip(loaded.classes, probs, strict=True)},
        "target": results[0].target_class if results else None,
        "maps": maps,
    }
    if info and info.true_index is not None:
        data["true_class"] = loaded.classes[info.true_index]
    return data


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_+" else "_" for c in name) or "class"
