"""``python -m core audit PATH``: patients and images shared between splits."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from core.cli import command


def _arguments(p: argparse.ArgumentParser) -> None:
    from core.commands.scan import _OPTION_FLAGS

    p.add_argument("path", metavar="PATH", help="dataset folder or CSV")
    p.add_argument(
        "--format", default="auto", help="auto (default), imagefolder, csv, coronahack, cohen, rsna or dicom"
    )
    for key, flag in _OPTION_FLAGS.items():
        p.add_argument(flag, dest=key, metavar="V", help=f"format option {key} (as in `scan`)")
    p.add_argument(
        "--threshold", type=int, default=None, metavar="BITS",
        help="near duplicates: largest Hamming distance of the 256-bit perceptual hashes (default 18)",
    )  # fmt: skip
    p.add_argument("--patients-only", action="store_true", help="check patient ids only; read no image")


def _render(data: dict[str, Any]) -> str:
    lines = [
        f"patients in several splits:           {data['patients_in_several_splits']}",
        f"duplicate images across splits:       {data['duplicate_images_across_splits']}",
        f"near-duplicate images across splits:  {data['near_duplicate_images_across_splits']}",
    ]
    pairs = data["pairs"]
    for pair in pairs[:50]:
        extra = f" patient {pair['patient_id']}" if "patient_id" in pair else ""
        extra += f" distance {pair['distance']}" if "distance" in pair else ""
        lines.append(
            f"  {pair['kind']:<15} {pair['split_a']}/{pair['split_b']}{extra}: {pair['path_a']}  {pair['path_b']}"
        )
    if len(pairs) > 50:
        lines.append(f"  ... {len(pairs) - 50} more pairs (--json lists them all)")
    return "\n".join(lines)


@command("audit", help="leakage audit: patients and (near-)duplicate images across splits", arguments=_arguments,
         render=_render)  # fmt: skip
def run(args: argparse.Namespace) -> dict[str, Any]:
    from core.commands.scan import _OPTION_FLAGS
    from core.data.audit import NEAR_THRESHOLD, audit, hash_images
    from core.data.index import scan
    from core.errors import ConfigError
    from core.progress import tqdm_progress

    threshold = NEAR_THRESHOLD if args.threshold is None else args.threshold
    if not 0 <= threshold <= 255:
        raise ConfigError(f"--threshold {threshold}: use a number of bits from 0 to 255")
    options = {key: getattr(args, key) for key in _OPTION_FLAGS if getattr(args, key) is not None}
    tty = sys.stderr.isatty()
    with tqdm_progress("scan", unit="img", enabled=tty) as progress:
        report = scan(args.path, args.format, options=options, progress=progress)
    hashes = None
    if not args.patients_only:
        split_rows = report.index[report.index["split"].fillna("").astype(str) != ""]
        with tqdm_progress("hash", unit="img", enabled=tty) as progress:
            hashes = hash_images(split_rows["path"].tolist(), progress=progress)
    result = audit(report.index, hashes, threshold)
    if not result.splits:
        print(
            "warning: the dataset has no train/val/test splits; nothing can leak between them",
            file=sys.stderr,
        )
    for failure in result.failures[:20]:
        print(f"warning: not compared as a picture: {failure['path']}: {failure['reason']}", file=sys.stderr)
    return result.to_json()
