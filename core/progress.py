"""Progress reporting without a UI dependency.

Long steps in core take a ``progress(done, total, message)`` callback. The CLI passes a tqdm
bar, the app an ``st.progress`` adapter, tests nothing.
"""
from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

ProgressFn = Callable[[int, int, str], None]


def no_progress(done: int, total: int, message: str = "") -> None:
    return None


@contextmanager
def tqdm_progress(desc: str, unit: str = "it", enabled: bool | None = None) -> Iterator[ProgressFn]:
    """A progress callback drawing a tqdm bar on stderr; by default only when stderr is a
    terminal (a log file or a pipe gets no carriage-return spam)."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield no_progress
        return
    from tqdm import tqdm

    bar = tqdm(desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=False, mininterval=0.25)
    try:

        def update(done: int, total: int, message: str = "") -> None:
            if bar.total != total:
                bar.total = total
            bar.n = done
            if message:
                bar.set_postfix_str(message, refresh=False)
            bar.refresh()

        yield update
    finally:
        bar.close()
