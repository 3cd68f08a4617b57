"""``python -m core cluster use local|ray [--address URL]`` and ``cluster status``: where runs
go (this machine, or a Ray cluster) and what that place has."""

from __future__ import annotations

import argparse
from typing import Any

from core.cli import command
from core.errors import ConfigError


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("use", "status"), help="use: choose the launcher; status: show it")
    p.add_argument(
        "kind", nargs="?", choices=("local", "ray"), help="with use: local processes or a Ray cluster"
    )
    p.add_argument(
        "--address",
        metavar="URL",
        help="with use ray: the Ray dashboard, e.g. http://HOST:8265 (default $CHESTLAB_RAY_ADDRESS)",
    )


def _amount(res: dict[str, Any]) -> str:
    total = f"{res['total']:g}"
    return total if res.get("free") is None else f"{res['free']:g} free of {total}"


def _render(data: dict[str, Any]) -> str:
    where = "local processes on this machine" if data["launcher"] == "local" else f"Ray at {data['address']}"
    lines = [f"launcher: {where}"]
    if not data["reachable"]:
        return "\n".join([*lines, f"unreachable: {data['error']}"])
    alive = [n for n in data["nodes"] if n["alive"]]
    lines.append(
        f"nodes:    {len(alive)} alive"
        + (f", {len(data['nodes']) - len(alive)} dead" if len(alive) < len(data["nodes"]) else "")
    )
    for n in data["nodes"]:
        role = "head" if n["head"] else "worker"
        state = "" if n["alive"] else " (dead)"
        lines.append(f"  {n['host']} ({role}{state}): {n['cpus']:g} CPUs, {n['gpus']:g} GPUs")
    lines.append(f"CPUs:     {_amount(data['cpus'])}")
    lines.append(f"GPUs:     {_amount(data['gpus'])}")
    lines.append(f"running:  {len(data['running'])}")
    for r in data["running"]:
        lines.append(
            f"  {r['run_id'] or '-'}  {r['status']}  {r['name']}  {r['device'] or ''}  {r['job'] or ''}".rstrip()
        )
    return "\n".join(lines)


@command("cluster", "choose where runs go (cluster use local|ray --address URL) or show it (cluster status)",
         _arguments, _render)  # fmt: skip
def cluster(args: argparse.Namespace) -> dict[str, Any]:
    from core.runs.cluster import cluster_status, use_launcher

    if args.action == "status":
        if args.kind or args.address:
            raise ConfigError(
                "cluster status takes no launcher or --address; to switch: cluster use local|ray"
            )
        return cluster_status(args.workspace)
    if not args.kind:
        raise ConfigError("cluster use needs a launcher: local, or ray --address http://HOST:8265")
    if args.kind == "local" and args.address:
        raise ConfigError("--address is for cluster use ray; cluster use local takes none")
    return use_launcher(args.kind, args.address, args.workspace)
