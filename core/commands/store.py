"""``python -m core store migrate --to URL``: copy a workspace's runs and metrics into a server
database (PostgreSQL), losing nothing; run it again and it copies only what is new."""

from __future__ import annotations

import argparse
from typing import Any

from core.cli import command


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("migrate",), help="migrate: copy runs and metrics to another store")
    p.add_argument(
        "--to", required=True, metavar="URL", help="the target, e.g. postgresql://USER:PASSWORD@HOST:5432/DB"
    )
    p.add_argument(
        "--from",
        dest="source",
        metavar="URL",
        help="the source store (default the workspace's SQLite file, whatever $CHESTLAB_STORE_URL says)",
    )


def _render(data: dict[str, Any]) -> str:
    return f"copied {data['runs']} run(s) and {data['metrics']} metric row(s)"


@command("store", "copy the workspace's runs and metrics into a server database (store migrate --to URL)",
         _arguments, _render)  # fmt: skip
def store(args: argparse.Namespace) -> dict[str, Any]:
    from core.progress import tqdm_progress
    from core.runs.migrate import migrate_store

    with tqdm_progress("migrate", unit="run") as progress:
        return migrate_store(args.to, source_url=args.source, workspace=args.workspace, progress=progress)
