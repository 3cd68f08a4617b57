"""The training process's allocator setting (core/train/allocator.py): freed tensor memory
is reused instead of being unmapped and faulted in again on every step."""
from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Allocates and frees a 48 MiB tensor 30 times (what activations do every training step)
# and prints the minor page faults it took.
PROBE = """
import resource, sys, torch
from core.train.allocator import tune_allocator
if sys.argv[1] == "tuned":
    print(tune_allocator(), file=sys.stderr)
torch.empty(12 * 2**20).fill_(1.0)  # warm
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(30):
    torch.empty(12 * 2**20).fill_(1.0)  # 48 MiB, written: every page touched
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's"
)


def _faults(mode: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    import os

    run = subprocess.run(
        [sys.executable, "-c", PROBE, mode], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    return int(run.stdout.strip()), run.stderr.strip()


@glibc_only
def test_freed_blocks_are_reused_instead_of_faulted_in_again():
    default, _ = _faults("default")
    tuned, state = _faults("tuned")
    assert "freed blocks reused" in state
    # 30 x 48 MiB of fresh pages: 368,670 faults with glibc's default; reused: 61,441 (measured).
    assert default > 100_000 and tuned < default / 4, (default, tuned)


@glibc_only
def test_chestlab_malloc_default_leaves_glibc_alone():
    faults, state = _faults("tuned", {"CHESTLAB_MALLOC": "default"})
    assert "CHESTLAB_MALLOC=default" in state and faults > 100_000


def test_tuning_is_recorded_once_per_process():
    from core.train.allocator import allocator_state, tune_allocator

    first = tune_allocator()
    assert tune_allocator() == first == allocator_state()
