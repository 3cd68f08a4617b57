"""Widgets and helpers shared by the pages (no logic worth testing lives here)."""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import streamlit as st

from core.errors import ChestLabError
from core.workspace import workspace_root

log = logging.getLogger("chestlab.app")


def ensure_demo_dataset() -> None:
    """On a workspace with no dataset, write the demo dataset (once) and register it."""
    from core.data import catalog

    if catalog.list_datasets():
        return
    with st.spinner("First start: writing the demo dataset into the workspace..."):
        catalog.ensure_demo()


def sidebar() -> None:
    with st.sidebar:
        st.caption(f"Workspace: `{workspace_root()}`")


@contextmanager
def guard(what: str = "this section") -> Iterator[None]:
    """The page boundary: a ChestLabError becomes its one-line ``st.error``; anything else
    is logged with its traceback and shown as a short message, never as a raw traceback.
    Streamlit's own rerun/stop signals are BaseExceptions and pass through."""
    try:
        yield
    except ChestLabError as exc:
        st.error(str(exc), icon=":material/error:")
    except Exception as exc:
        log.exception("unexpected error in %s", what)
        st.error(f"Something went wrong in {what} ({type(exc).__name__}); the details are in the server log.",
                 icon=":material/bug_report:")  # fmt: skip


def progress_bar(text: str) -> tuple[Any, Callable[[int, int, str], None]]:
    """An ``st.progress`` bar and a ``progress(done, total, message)`` callback for core."""
    bar = st.progress(0.0, text=text)

    def update(done: int, total: int, message: str = "") -> None:
        share = min(max(done / total, 0.0), 1.0) if total else 0.0
        bar.progress(share, text=f"{text}: {message} {done:,}/{total:,}" if total else text)

    return bar, update
