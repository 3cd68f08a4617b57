"""``python -m core evaluate RUN_ID [--split test]``: metrics of a run's best checkpoint."""
from __future__ import annotations

import argparse
from typing import Any

from core.cli import command


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--checkpoint", default="best", choices=("best", "last"))


def _render(r: dict[str, Any]) -> str:
    lines = [f"run {r['run_id']} on {r['split']} ({r['n_images']} images)"]
    for k in ("accuracy", "balanced_accuracy", "auc", "pr_auc", "sensitivity", "specificity", "f1"):
        lines.append(f"  {k:<18} {r[k]:.4f}")
    lines.append("  per class:")
    for c, m in r["per_class"].items():
        lines.append(f"    {c:<16} n={m['n']:<5} sens {m['sensitivity']:.3f}  spec {m['specificity']:.3f}  "
                     f"auc {m['auc']:.3f}")
    lines.append(f"  confusion matrix (rows = true {r['classes']}): {r['confusion_matrix']}")
    return "\n".join(lines)


@command("evaluate", "metrics of a run's checkpoint on a split", arguments, _render)
def run(args: argparse.Namespace) -> dict[str, Any]:
    from core.evaluate.run_eval import evaluate_run
    from core.progress import tqdm_progress

    with tqdm_progress("evaluate") as progress:
        return evaluate_run(args.run_id, args.split, args.checkpoint, progress=progress)
