"""Errors a user can act on.

Anything raised as a ``ChestLabError`` is shown to the user as one line (CLI: stderr and
exit status 2; app: ``st.error``). Its message must name the file, field or value at fault.
Anything else is a bug and is logged with its traceback.
"""
from __future__ import annotations


class ChestLabError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class DataError(ChestLabError):
    """A dataset, image or table that cannot be read as asked."""


class ConfigError(ChestLabError):
    """A run configuration or option with a bad value."""


class NotFoundError(ChestLabError):
    """A run, task, checkpoint or file that does not exist."""
