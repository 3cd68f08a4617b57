"""Helpers shared by the AppTests of the pages (``tests/app``)."""
from __future__ import annotations

from streamlit.testing.v1 import AppTest

TIMEOUT = 60  # seconds per script run: the first import of torch and plotly is slow on 2 cores


def assert_clean(at: AppTest) -> None:
    """No exception and no error element on the page."""
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def open_page(path: str, timeout: float = TIMEOUT) -> AppTest:
    """The page at ``path``, run once and checked clean."""
    at = AppTest.from_file(path, default_timeout=timeout)
    at.run()
    assert_clean(at)
    return at
