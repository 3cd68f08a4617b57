"""Widgets and helpers shared by the pages (no logic worth testing lives here)."""
from __future__ import annotations

import logging

import streamlit as st

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
