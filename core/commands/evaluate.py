"""``python -m core evaluate RUN_ID [--split test]``: metrics of a run's best checkpoint, with
bootstrap intervals, the operating point chosen on val, calibration and subgroups."""

from __future__ import annotations

import argparse
from typing import Any

from core.cli import command


def _fraction(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0 < x <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return x


def _columns(text: str) -> list[str]:
    return [] if text.strip().lower() == "none" else [c.strip() for c in text.split(",") if c.strip()]


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--checkpoint", default="best", choices=("best", "last"))
    p.add_argument(
        "--bootstrap",
        type=int,
        default=1000,
        metavar="N",
        help="bootstrap resamples for the intervals (default 1000; 0 = none)",
    )
    rule = p.add_mutually_exclusive_group()
    rule.add_argument(
        "--target-sensitivity",
        type=_fraction,
        metavar="X",
        help="operating point: the threshold reaching this sensitivity on val (default 0.95)",
    )
    rule.add_argument(
        "--target-specificity",
        type=_fraction,
        metavar="X",
        help="operating point: the threshold reaching this specificity on val",
    )
    rule.add_argument("--youden", action="store_true", help="operating point: maximise Youden's J on val")
    p.add_argument(
        "--positive",
        metavar="CLASS",
        help="the positive class of the operating point (default: the "
        "second class, the first after a normal-like one)",
    )
    p.add_argument(
        "--subgroups",
        type=_columns,
        metavar="COL,...",
        help="metadata columns for subgroup metrics (default: sex, age, view, modality, source "
        "when present; none = skip)",
    )
    p.add_argument(
        "--calibrate",
        action="store_true",
        help="apply the run's temperature (fitted on val and stored with the run on first use)",
    )
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")


def _rule(args: argparse.Namespace) -> tuple[str, float]:
    if args.youden:
        return "youden", 0.0
    if args.target_specificity is not None:
        return "specificity", args.target_specificity
    return "sensitivity", args.target_sensitivity if args.target_sensitivity is not None else 0.95


def _render(r: dict[str, Any]) -> str:
    from core.evaluate.bootstrap import format_ci

    ci = r.get("ci", {})

    def cell(key: str, value: float) -> str:
        lo, hi = ci.get(key, [None, None])
        return format_ci(value, lo, hi, 3)

    lines = [f"run {r['run_id']} on {r['split']} ({r['n_images']} images)"]
    if "ci_method" in r:
        m = r["ci_method"]
        lines[0] += f"; {int(m['level'] * 100)}% intervals from {m['resamples']} resamples of {m['unit']}"
    for k in ("accuracy", "balanced_accuracy", "auc", "pr_auc", "sensitivity", "specificity", "f1"):
        lines.append(f"  {k:<18} {cell(k, r[k])}")
    lines.append("  per class:")
    for c, m in r["per_class"].items():
        lines.append(
            f"    {c:<16} n={m['n']:<5} sens {cell(f'sensitivity/{c}', m['sensitivity'])}  "
            f"spec {cell(f'specificity/{c}', m['specificity'])}  auc {cell(f'auc/{c}', m['auc'])}"
        )
    lines.append(f"  confusion matrix (rows = true {r['classes']}): {r['confusion_matrix']}")
    op = r.get("operating_point")
    if op:
        if op.get("threshold") is None:
            lines.append(f"  operating point: none ({op.get('error', '')})")
        else:
            lines.append(f"  operating point: {op['description']}")
            lines.append(
                f"    on {r['split']}: sensitivity {_f(op['sensitivity'])}  "
                f"specificity {_f(op['specificity'])}  PPV {_f(op['ppv'])}  NPV {_f(op['npv'])}  "
                f"confusion [[TN, FP], [FN, TP]] {op['confusion_matrix']}"
            )
    cal = r.get("calibration")
    if cal:
        t = f", temperature {cal['temperature']:.3f} applied" if cal.get("temperature") else ""
        lines.append(f"  calibration: ECE {_f(cal['ece'])}  Brier {_f(cal['brier'])}{t}")
    if r.get("subgroups"):
        lines.append(f"  subgroups: {r['subgroup_gap']}")
        for s in r["subgroups"]:
            small = "  (too small)" if s["too_small"] else ""
            lines.append(
                f"    {s['column']}={s['value']:<12} n={s['n']:<5} auc {_f(s['auc'])}  "
                f"sens({(op or {}).get('positive_class', '+')}) {_f(s['pos_sensitivity'])}{small}"
            )
    return "\n".join(lines)


def _f(x: float | None) -> str:
    return "n/a" if x is None or x != x else f"{x:.3f}"


@command(
    "evaluate",
    "metrics of a run's checkpoint on a split, with intervals, operating point, calibration, subgroups",
    arguments,
    _render,
)
def run(args: argparse.Namespace) -> dict[str, Any]:
    from core.errors import ConfigError
    from core.evaluate.run_eval import extended_evaluation
    from core.progress import tqdm_progress

    if args.bootstrap < 0:
        raise ConfigError(f"--bootstrap {args.bootstrap}: give 0 (no intervals) or more resamples")
    rule, target = _rule(args)
    with tqdm_progress("evaluate") as progress:
        return extended_evaluation(
            args.run_id,
            args.split,
            args.checkpoint,
            progress=progress,
            n_resamples=args.bootstrap,
            rule=rule,
            target=target,
            positive=args.positive,
            subgroups=args.subgroups,
            calibrated=args.calibrate,
            seed=args.seed,
        )
