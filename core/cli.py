"""The command line: ``python -m core <command>``.

Each command lives in its own module under ``core/commands/`` and registers itself with
``@command``. Commands return plain data; ``--json`` prints it as JSON, otherwise a short
human rendering. Errors a user can fix (``ChestLabError``) print one line on stderr and exit
with status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import pkgutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.errors import ChestLabError
from core.registry import Registry

Arguments = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], Any]
Render = Callable[[Any], str]


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    arguments: Arguments
    run: Run
    render: Render | None = None


COMMANDS: Registry[Command] = Registry("command")


def command(name: str, help: str, arguments: Arguments, render: Render | None = None) -> Callable[[Run], Run]:
    """Register ``run(args) -> data`` as ``python -m core NAME``."""

    def wrap(run: Run) -> Run:
        COMMANDS.add(name, Command(name, help, arguments, run, render))
        return run

    return wrap


def _load_commands() -> None:
    import core.commands as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"core.commands.{mod.name}")


def build_parser() -> argparse.ArgumentParser:
    _load_commands()
    parser = argparse.ArgumentParser(prog="python -m core", description="ChestLab command line")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print the result as JSON")
    common.add_argument("--workspace", metavar="DIR", help="workspace folder (default ./workspace or $CHESTLAB_WORKSPACE)")
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.help, parents=[common])
        cmd.arguments(p)
    return parser


def render_default(data: Any) -> str:
    if isinstance(data, dict):
        width = max((len(str(k)) for k in data), default=0)
        lines = []
        for k, v in data.items():
            if isinstance(v, (dict, list)):
                v = json.dumps(v, default=str)
                if len(v) > 200:
                    v = v[:197] + "..."
            lines.append(f"{str(k):<{width}}  {v}")
        return "\n".join(lines)
    if isinstance(data, list):
        return "\n".join(json.dumps(x, default=str) for x in data)
    return str(data)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.workspace:
        import os

        os.environ["CHESTLAB_WORKSPACE"] = args.workspace
    cmd = COMMANDS.get(args.command)
    try:
        data = cmd.run(args)
    except ChestLabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        # A Python without the requirements (on a Ray node: the python on its PATH) would
        # otherwise die with a traceback deep in whichever import came first.
        import socket

        print(
            f"error: {sys.executable} on {socket.gethostname()} has no module {exc.name!r}: install "
            "ChestLab's requirements.txt into the Python that runs `python -m core`",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    if args.json:
        from core.fileio import to_jsonable

        print(json.dumps(to_jsonable(data)))
    elif data is not None:
        print((cmd.render or render_default)(data))
    return 0
