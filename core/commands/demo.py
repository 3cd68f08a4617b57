"""``python -m core demo DIR [--seed N]``: write the built-in synthetic demo dataset."""

from __future__ import annotations

import argparse
from typing import Any

from core.cli import command


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", metavar="DIR", help="folder to write into (new, empty, or a previous demo)")
    p.add_argument(
        "--seed", type=int, default=0, help="random seed; the same seed gives the same files (default 0)"
    )


def _render(data: dict[str, Any]) -> str:
    counts = ", ".join(f"{name} {n}" for name, n in data["classes"].items())
    return f"wrote {data['n_images']} images ({counts}) to {data['root']}"


@command(
    "demo",
    help="write the synthetic demo dataset (3 classes, lesion boxes, PNG and DICOM)",
    arguments=_arguments,
    render=_render,
)
def run(args: argparse.Namespace) -> dict[str, Any]:
    from core.data.demo import write_demo
    from core.progress import tqdm_progress

    with tqdm_progress("demo", unit="img") as progress:
        return write_demo(args.dir, seed=args.seed, progress=progress).to_json()
