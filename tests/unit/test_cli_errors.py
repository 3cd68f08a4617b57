"""The CLI's boundary: a Python without the requirements gets one line, not a traceback."""
from __future__ import annotations

import dataclasses

from core import cli


def test_a_missing_module_is_one_line_naming_the_interpreter_and_the_module(monkeypatch, capsys, workspace):
    cli.build_parser()  # registers the commands
    original = cli.COMMANDS.get("runs")

    def lacks_pandas(args):
        raise ModuleNotFoundError("No module named 'pandas'", name="pandas")

    monkeypatch.setattr(cli.COMMANDS, "get", lambda name: dataclasses.replace(original, run=lacks_pandas))
    assert cli.main(["runs"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "has no module 'pandas'" in err and "requirements.txt" in err
