"""``python -m core scan PATH``: read a dataset into the index and summarise it."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from core.cli import command

_OPTION_FLAGS = {
    "path_column": "--path-column",
    "label_column": "--label-column",
    "split_column": "--split-column",
    "patient_column": "--patient-column",
    "boxes": "--boxes",
    "labels": "--labels",
}


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="PATH", help="dataset folder or CSV")
    p.add_argument(
        "--format",
        default="auto",
        help="auto (default), imagefolder, csv, coronahack, cohen, rsna or dicom",
    )
    p.add_argument("--path-column", metavar="C", help="csv: column with image paths (default path)")
    p.add_argument(
        "--label-column", metavar="C", help="csv/dicom labels: column with class names (default label)"
    )
    p.add_argument("--split-column", metavar="C", help="csv: column with train/val/test (default split)")
    p.add_argument("--patient-column", metavar="C", help="csv: column with patient ids (default patient_id)")
    p.add_argument("--boxes", metavar="FILE", help="csv: boxes CSV path,x,y,width,height[,label]")
    p.add_argument("--labels", metavar="FILE", help="dicom: CSV with path, filename or PatientID and a label")
    p.add_argument("--no-cache", action="store_true", help="rescan even if the cached index is current")


def _render(data: dict[str, Any]) -> str:
    n, k = data["n_images"], len(data["classes"])
    lines = [f"{data['root']}: {data['format']}, {n} image{'s' * (n != 1)}, {k} class{'es' * (k != 1)}"]
    splits = [s for s in data["splits"]]
    header = ["class", *splits, "total"]
    table = [header]
    for name, n in data["classes"].items():
        table.append([name, *(str(data["splits"][s].get(name, 0)) for s in splits), str(n)])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  " + "  ".join(cells))
    if data["metadata_columns"]:
        cols = ", ".join(data["metadata_columns"])
        lines.append(f"metadata: {cols if len(cols) <= 200 else cols[:197] + '...'}")
    if data["n_boxes"]:
        lines.append(f"boxes: {data['n_boxes']}")
    if data["skipped"]:
        lines.append(f"skipped {len(data['skipped'])}:")
        lines.extend(f"  {s['path']}: {s['reason']}" for s in data["skipped"])
    else:
        lines.append("skipped: none")
    return "\n".join(lines)


@command("scan", help="read a dataset into the index and summarise it", arguments=_arguments, render=_render)
def run(args: argparse.Namespace) -> dict[str, Any]:
    from core.data.index import scan
    from core.progress import tqdm_progress

    options = {key: getattr(args, key) for key in _OPTION_FLAGS if getattr(args, key) is not None}
    with tqdm_progress("scan", unit="img", enabled=sys.stderr.isatty()) as progress:
        report = scan(args.path, args.format, options=options, progress=progress, use_cache=not args.no_cache)
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return report.to_json()
