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
def tqdm_progress(desc: str, unit: str = "it", enabled: bool = True) -> Iterator[ProgressFn]:
    """A progress callback drawing a tqdm bar on stderr (quiet when stderr is not a tty
    and ``enabled`` is False)."""
    if not enabled:
        yield no_progress
        return
    from tqdm import tqdm

    bar = tqdm(desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=False)
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
