"""``python -m core compare RUN_A RUN_B [--split val] [--metric auc]``: is B better than A?
The paired bootstrap of the metric's difference on the same images."""

from __future__ import annotations

import argparse
from typing import Any

from core.cli import command


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_a", metavar="RUN_A")
    p.add_argument("run_b", metavar="RUN_B")
    p.add_argument(
        "--split",
        default="val",
        choices=("train", "val", "test"),
        help="the split both runs are compared on (default val: choose on val, report on test)",
    )
    p.add_argument(
        "--metric",
        default="auc",
        metavar="M",
        help="auc (default), pr_auc, sensitivity, specificity, accuracy, balanced_accuracy, f1, "
        "precision, or per class as auc/CLASS",
    )
    p.add_argument("--checkpoint", default="best", choices=("best", "last"))
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="resamples (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")


def _render(data: dict[str, Any]) -> str:
    return (
        f"{data['sentence']}\n  A {data['run_a']}: {data['a']:.4f}   B {data['run_b']}: {data['b']:.4f}   "
        f"B - A {data['difference']:+.4f}  95% CI [{data['ci'][0]:+.4f}, {data['ci'][1]:+.4f}]  "
        f"p {data['p_value']:.4f}"
    )


@command(
    "compare",
    "paired bootstrap of a metric's difference between two runs on the same images",
    _arguments,
    _render,
)
def run(args: argparse.Namespace) -> dict[str, Any]:
    from core.errors import ConfigError
    from core.evaluate.compare import compare_runs

    if args.bootstrap < 1:
        raise ConfigError(
            f"--bootstrap {args.bootstrap}: a comparison needs at least 1 resample (1000 is usual)"
        )
    return compare_runs(
        args.run_a,
        args.run_b,
        args.split,
        args.metric,
        which=args.checkpoint,
        n_resamples=args.bootstrap,
        seed=args.seed,
    ).to_json()
