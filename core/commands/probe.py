"""``python -m core probe PATH [--format F] [--task NAME]``: can metadata or file properties
alone predict the label? (A shortcut a classifier could learn instead of the lung.)"""

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
        if key != "no_cache":
            p.add_argument(flag, dest=key, metavar="V", help=f"format option {key} (as in `scan`)")
    p.add_argument("--task", metavar="NAME", help="a task saved in the workspace: its classes are the label")
    p.add_argument("--seed", type=int, default=0, help="fold seed (default 0)")


def _render(data: dict[str, Any]) -> str:
    lines = [data["summary"]]
    for f in data["features"]:
        alone = "n/a" if f["auc_alone"] is None else f"{f['auc_alone']:.3f}"
        drop = "n/a" if f["importance"] is None else f"{f['importance']:+.3f}"
        lines.append(
            f"  {f['probe']:<16} {f['feature']:<28} AUC alone {alone}   AUC drop when shuffled {drop}"
        )
    for c, why in data["excluded"].items():
        lines.append(f"  left out: {c} ({why})")
    lines.extend(f"  note: {n}" for n in data["notes"])
    return "\n".join(lines)


@command(
    "probe", "shortcut probe: can metadata or file properties alone predict the label?", _arguments, _render
)
def run(args: argparse.Namespace) -> dict[str, Any]:
    from core.commands.scan import _OPTION_FLAGS
    from core.evaluate.probe import probe_dataset
    from core.progress import tqdm_progress

    options = {k: getattr(args, k) for k in _OPTION_FLAGS if getattr(args, k, None) is not None}
    with tqdm_progress("probe", enabled=sys.stderr.isatty()) as progress:
        result = probe_dataset(
            args.path, args.format, options=options, task=args.task, seed=args.seed, progress=progress
        )
    return result.to_json()
