"""``python -m core report RUN_ID [--split test] --out FILE.html``: one self-contained
evaluation page per run (figures and plotly.js inlined: it opens offline, and can be mailed)."""

from __future__ import annotations

import argparse
from typing import Any

from core.cli import command


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument(
        "--out", metavar="FILE.html", help="where to write it (default <run folder>/report_<split>.html)"
    )
    p.add_argument(
        "--bootstrap", type=int, default=1000, metavar="N", help="resamples for intervals (default 1000)"
    )
    p.add_argument("--no-probe", action="store_true", help="leave out the shortcut probe")


def _render(data: dict[str, Any]) -> str:
    return f"wrote {data['path']} ({data['bytes'] / 1e6:.1f} MB, {data['seconds']:.1f} s)"


@command("report", "one self-contained HTML evaluation page of a run", _arguments, _render)
def run(args: argparse.Namespace) -> dict[str, Any]:
    from core.errors import ConfigError
    from core.evaluate.report import write_report

    if args.bootstrap < 0:
        raise ConfigError(f"--bootstrap {args.bootstrap}: give 0 (no intervals) or more resamples")
    return write_report(
        args.run_id, args.out, split=args.split, n_resamples=args.bootstrap, probe=not args.no_probe
    )
