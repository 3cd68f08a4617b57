"""``python -m core runs | cancel RUN_ID | resume RUN_ID | worker``: background runs."""

from __future__ import annotations

import argparse
from typing import Any

from core.cli import command


def _no_arguments(p: argparse.ArgumentParser) -> None:
    return None


def _run_id_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_id", metavar="RUN_ID", help="a run id, as `python -m core runs` lists them")


def _render_runs(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no runs yet"
    header = ("RUN_ID", "NAME", "STATUS", "PROGRESS", "DEVICE", "PID", "BEST")
    table = [header]
    for r in rows:
        best = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in list(r["best"].items())[:3]
        )
        table.append(
            (
                r["run_id"],
                r["name"],
                r["status"],
                f"{100 * r['progress']:.0f}%",
                r["device"] or "",
                str(r["pid"] or ""),
                best,
            )
        )
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table
    )


def _render_status(data: dict[str, Any]) -> str:
    return f"run {data['run_id']}: {data['status']}"


@command(
    "runs",
    "list runs (newest first) with status, progress, device and best metrics",
    _no_arguments,
    _render_runs,
)
def runs(args: argparse.Namespace) -> list[dict[str, Any]]:
    from core.runs.store import RunStore

    return [rec.summary() for rec in RunStore(workspace=args.workspace).list_runs()]


def _cancel_arguments(p: argparse.ArgumentParser) -> None:
    _run_id_argument(p)
    p.add_argument(
        "--no-wait",
        action="store_true",
        help="return at once instead of waiting (up to 15 s) for the run to stop",
    )


@command(
    "cancel",
    "cancel a queued or running run (a running one stops within seconds)",
    _cancel_arguments,
    _render_status,
)
def cancel(args: argparse.Namespace) -> dict[str, Any]:
    import time

    from core.runs.store import RunStatus, RunStore
    from core.runs.submit import cancel_run

    store = RunStore(workspace=args.workspace)
    rec = cancel_run(args.run_id, args.workspace, store=store)
    deadline = time.monotonic() + (0 if args.no_wait else 15)
    while rec.status is RunStatus.RUNNING and time.monotonic() < deadline:
        time.sleep(0.25)
        rec = store.get_run(rec.id)
    return {"run_id": rec.id, "status": rec.status.value}


@command(
    "resume", "resume a failed or cancelled run from its last checkpoint", _run_id_argument, _render_status
)
def resume(args: argparse.Namespace) -> dict[str, Any]:
    from core.runs.submit import resume_run

    rec = resume_run(args.run_id, args.workspace)
    return {"run_id": rec.id, "status": rec.status.value}


def _worker_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--idle-exit",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="exit after this long with nothing to do",
    )
    p.add_argument("--detached", action="store_true", help=argparse.SUPPRESS)  # how ensure_worker starts it


@command(
    "worker", "run the workspace's worker in the foreground (normally started on demand)", _worker_arguments
)
def worker(args: argparse.Namespace) -> None:
    import logging

    from core.runs.worker import serve

    # The worker's log is read after the fact: give it timestamps.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("chestlab")
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    logger.propagate = False
    serve(args.workspace, detached=args.detached, idle_exit_s=args.idle_exit)
