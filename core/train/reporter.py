"""How a training run reports what it does.

The loop talks only to a ``Reporter``. The run folder's JSON-lines reporter is always
there (so a run folder alone tells its story); the run store implements the same interface
so the app sees metrics, progress and heartbeats live.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class MetricRow:
    epoch: int
    step: int
    split: str  # "train", "val" or "test"
    name: str  # "loss", "auc", "accuracy", "sensitivity/covid", ...
    value: float
    time: float = field(default_factory=time.time)


class Reporter(Protocol):
    def log_metrics(self, rows: list[MetricRow]) -> None:
        """Append metric rows (never overwrites)."""

    def progress(self, fraction: float, epoch: int, step: int, message: str = "") -> None:
        """Where the run is (0..1); also serves as the heartbeat."""

    def set_info(self, **info: Any) -> None:
        """Merge facts about the run (device, class weights actually used, sizes, ...)."""

    def should_stop(self) -> bool:
        """True once a cancel was asked for; the loop then checkpoints and stops."""

    def finish(self, status: str, best: dict[str, float], test: dict[str, Any], error: str = "") -> None:
        """Final status ("done", "failed", "cancelled") and results."""


class FolderReporter:
    """Writes ``metrics.jsonl``, ``info.json`` and ``result.json`` in the run folder."""

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._info: dict[str, Any] = {}
        info_path = self.dir / "info.json"
        if info_path.exists():
            self._info = json.loads(info_path.read_text())

    def log_metrics(self, rows: list[MetricRow]) -> None:
        with open(self.dir / "metrics.jsonl", "a") as f:
            for r in rows:
                f.write(json.dumps(asdict(r)) + "\n")

    def progress(self, fraction: float, epoch: int, step: int, message: str = "") -> None:
        return None

    def set_info(self, **info: Any) -> None:
        from core.fileio import atomic_write_json

        self._info.update(info)
        atomic_write_json(self.dir / "info.json", self._info)

    def should_stop(self) -> bool:
        return (self.dir / "STOP").exists()

    def finish(self, status: str, best: dict[str, float], test: dict[str, Any], error: str = "") -> None:
        from core.fileio import atomic_write_json

        atomic_write_json(self.dir / "result.json", {"status": status, "best": best, "test": test, "error": error})


class MultiReporter:
    """Fans one report out to several reporters (folder + store)."""

    def __init__(self, *reporters: Reporter) -> None:
        self.reporters = reporters

    def log_metrics(self, rows: list[MetricRow]) -> None:
        for r in self.reporters:
            r.log_metrics(rows)

    def progress(self, fraction: float, epoch: int, step: int, message: str = "") -> None:
        for r in self.reporters:
            r.progress(fraction, epoch, step, message)

    def set_info(self, **info: Any) -> None:
        for r in self.reporters:
            r.set_info(**info)

    def should_stop(self) -> bool:
        return any(r.should_stop() for r in self.reporters)

    def finish(self, status: str, best: dict[str, float], test: dict[str, Any], error: str = "") -> None:
        for r in self.reporters:
            r.finish(status, best, test, error)


def read_metrics(run_dir: str | os.PathLike[str]) -> list[MetricRow]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            rows.append(MetricRow(**json.loads(line)))
    return rows


class TqdmReporter:
    """A progress bar on stderr for a foreground run: ETA, live loss and the val metric."""

    def __init__(self, epochs: int, monitor: str = "auc", enabled: bool = True) -> None:
        self.epochs, self.monitor, self.enabled = epochs, monitor, enabled
        self._bar: Any = None
        self._val: float | None = None

    def __enter__(self) -> TqdmReporter:
        if self.enabled:
            import sys

            from tqdm import tqdm

            self._bar = tqdm(total=1000, desc="training", unit="‰", file=sys.stderr, dynamic_ncols=True,
                             bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.close()

    def log_metrics(self, rows: list[MetricRow]) -> None:
        for r in rows:
            if r.split == "val" and r.name == self.monitor:
                self._val = r.value

    def progress(self, fraction: float, epoch: int, step: int, message: str = "") -> None:
        if self._bar is None:
            return
        self._bar.n = int(round(fraction * 1000))
        val = f" | val {self.monitor} {self._val:.3f}" if self._val is not None else ""
        self._bar.set_postfix_str(f"{message}{val}", refresh=False)
        self._bar.refresh()

    def set_info(self, **info: Any) -> None:
        return None

    def should_stop(self) -> bool:
        return False

    def finish(self, status: str, best: dict[str, float], test: dict[str, Any], error: str = "") -> None:
        if self._bar is not None and status == "done":
            self._bar.n = 1000
            self._bar.refresh()
