"""The C allocator of a process that trains or runs many forward passes.

PyTorch's CPU tensors come from ``malloc``. glibc serves every block above its mmap
threshold (128 KiB, growing to at most 32 MiB) with a fresh ``mmap`` and gives it back with
``munmap`` when freed, so each training step maps, page-faults (the kernel zeroes every
page) and unmaps its activations again: on this 2-core machine that is 15% of a ResNet-18
bf16 training step at 224 px. PyTorch's CPU tuning guide answers with jemalloc or tcmalloc
through LD_PRELOAD; the same effect needs no extra library: ``mallopt`` turns per-block
mmap off, so freed blocks go back to the heap and the next step reuses them, and raises
the trim threshold so the heap's top is not returned to the kernel after every step
(above 256 MiB free at the top it still is).

Set by the processes that do this work: a training run (``Trainer.setup``) and any
process that loads a run's model (``load_run_model``: predictions, CAMs on the Inspect page
and the CLI). Measured here: a ResNet-18 bf16 training step 49 -> 58 images/s, bf16
inference at batch 64 142 -> 211 images/s, fp32 inference at batch 16 57 -> 72 (python
bench/train_pipeline.py runs the notebooks' way first, with glibc's default, as in a
notebook). ``CHESTLAB_MALLOC=default`` leaves glibc alone.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import threading

log = logging.getLogger(__name__)

ENV = "CHESTLAB_MALLOC"
M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_MAX = -4
TRIM_THRESHOLD = 256 * 2**20

_lock = threading.Lock()
_state: str | None = None


def tune_allocator() -> str:
    """Set the process's allocator up for repeated large tensors (once per process);
    returns what it is now, for the run's setup record."""
    global _state
    with _lock:
        if _state is None:
            _state = _tune()
            log.info("allocator: %s", _state)
        return _state


def _tune() -> str:
    if os.environ.get(ENV, "").strip().lower() in ("default", "0", "off", "no", "false"):
        return f"glibc default ({ENV}=default)"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "the platform's default"
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    except (OSError, AttributeError) as exc:
        return f"glibc default (mallopt unavailable: {exc})"
    if not ok:
        return "glibc default (mallopt refused the setting)"
    return "glibc, freed blocks reused (no mmap per block; trimmed above 256 MiB)"


def allocator_state() -> str | None:
    """What ``tune_allocator`` did in this process, or None before it ran."""
    return _state
