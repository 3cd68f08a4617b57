"""Widgets the Train and Compare pages share: the run store, a runs table whose selection
stays on the same runs while rows move, messages that survive a rerun, links between pages.
No logic worth testing lives here (that is in ``core.runs.views``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import streamlit as st

from core.runs import views
from core.runs.store import RunRecord, RunStore
from core.workspace import workspace_root

REFRESH_S = 2.0  # live parts refresh this often while a run is queued or running
_FLASH = "_run_flash"


@st.cache_resource(show_spinner=False, max_entries=8)
def _store_at(workspace: str) -> RunStore:
    # One store per workspace for the server: it keeps one connection per thread.
    return RunStore(workspace=workspace)


def run_store() -> RunStore:
    return _store_at(str(workspace_root()))


def best_so_far(runs: Sequence[RunRecord]) -> dict[str, tuple[float, int]]:
    """Best val monitor of the runs without a recorded best (training, or stopped early):
    one query over their monitor rows only."""
    from core.runs.store import RunStatus

    need = [r.id for r in runs if not r.best and r.status is not RunStatus.QUEUED]
    if not need:
        return {}
    rows, _ = run_store().metrics(need, names=sorted({views.monitor_of(r) for r in runs}))
    return views.live_best(rows, runs)


def is_live(records: Sequence[RunRecord]) -> bool:
    return any(r.status in views.LIVE for r in records)


def refresh_every(live: bool) -> float | None:
    """A fragment's ``run_every``: every 2 s while something is live, else only on input.
    A full rerun re-arms it, so a fragment that sees its runs' liveness change calls
    ``st.rerun()``."""
    return REFRESH_S if live else None


def flash(message: str, icon: str = ":material/check_circle:") -> None:
    """A toast shown on the next run (a toast sent right before ``st.rerun()`` is lost)."""
    st.session_state.setdefault(_FLASH, []).append((message, icon))


def show_flashes() -> None:
    for message, icon in st.session_state.pop(_FLASH, []):
        st.toast(message, icon=icon)


def page_link(page: str, label: str, icon: str) -> None:
    """``st.page_link`` to another page of the app; a plain hint when the page runs on its
    own (``streamlit run pages/x.py``, AppTest) and has no navigation to link into."""
    from streamlit.errors import StreamlitAPIException

    try:
        st.page_link(page, label=label, icon=icon)
    except StreamlitAPIException:
        st.markdown(f"Open **{label}** from the sidebar.")


def select_runs(
    table: pd.DataFrame,
    key: str,
    *,
    mode: str = "multi-row",
    default_ids: Sequence[str] = (),
    column_config: Mapping[str, Any] | None = None,
    column_order: Sequence[str] | None = None,
    height: int | str = "auto",
) -> list[str]:
    """A runs table (with an ``id`` column) the user selects rows in; returns the selected
    run ids. The selection is by position in Streamlit, so when rows move (a new run on top,
    a deleted run) it is moved back onto the runs that were selected."""
    state = st.session_state
    ids = table["id"].tolist()
    shown_key = f"{key}__ids"
    last = state.get(shown_key)
    wanted = state.pop(f"{key}__want", None)
    default = None
    if wanted is not None:
        state[key] = {"selection": {"rows": sorted(ids.index(r) for r in wanted if r in ids)}}
    elif last is not None and key in state:
        positions = list(state[key]["selection"]["rows"])
        moved = views.remap_selection(last, positions, ids)
        if moved != sorted(positions):
            state[key] = {"selection": {"rows": moved}}
    elif default_ids:
        rows = [ids.index(r) for r in default_ids if r in ids]
        default = {"selection": {"rows": rows}} if rows else None
    event = st.dataframe(
        table,
        key=key,
        on_select="rerun",
        selection_mode=mode,
        selection_default=default,
        hide_index=True,
        column_config=dict(column_config or {}),
        column_order=list(column_order) if column_order else None,
        height=height,
        placeholder="–",
    )
    state[shown_key] = ids
    return [ids[i] for i in event.selection.rows if 0 <= i < len(ids)]


def select_next_time(key: str, run_ids: Sequence[str]) -> None:
    """Select these runs in the table on its next render (a run just launched)."""
    st.session_state[f"{key}__want"] = list(run_ids)


STATUS_HELP = (
    "queued: waiting for a free device · running · done · failed (the reason is in the note) · "
    "cancelled (keeps its last checkpoint; resume continues from it)"
)


def created_column() -> Any:
    return st.column_config.DatetimeColumn("created", format="D MMM HH:mm")
