"""ChestLab: the Streamlit entry point.

Routes to the four pages with ``st.navigation``; the pages themselves are thin and call
``core``. Run with ``streamlit run app.py``.
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

# A local favicon: a Material icon here would be fetched from fonts.gstatic.com (offline: a
# console error on every page).
st.set_page_config(page_title="ChestLab", page_icon=str(Path(__file__).parent / ".streamlit" / "favicon.png"), layout="wide")

from pages import common  # noqa: E402  (after set_page_config)

pages = [
    st.Page("pages/explore.py", title="Explore", icon=":material/query_stats:", default=True),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/compare.py", title="Compare", icon=":material/stacked_line_chart:"),
    st.Page("pages/inspect.py", title="Inspect", icon=":material/center_focus_strong:"),
]
# st.navigation first: until it is called, Streamlit would list every file in pages/.
nav = st.navigation(pages)
common.sidebar()
common.ensure_demo_dataset()
nav.run()
