"""ChestLab core: everything but the pages. Never imports streamlit."""
