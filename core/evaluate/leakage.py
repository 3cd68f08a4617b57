"""The leakage gate: a run's task is audited before it trains.

The task decides the final splits (kept as the dataset gives them, or re-split by patient),
so the audit (``core.data.audit``) runs on the task's table: patients with images in two
splits, and byte-identical images in two splits, leak, and a run on such a task needs an
explicit ``allow_leakage`` (``--allow-leakage``, or the Train form's confirmation); the run
then records what leaked. Near-duplicate pictures (perceptual hashes within the audit's
threshold) are reported beside them but do not block: the hash has a small false-match
rate, and a gate must not stop a clean dataset.

Hashing reads every image once (cached in the workspace, shared with the Explore page's
audit), so the first check of a large dataset costs about as long as building its training
cache; ``images="cached"`` uses the hashes only when they are all known already.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from core.progress import ProgressFn, no_progress

EXAMPLES = 10


@dataclass
class LeakageReport:
    patients_in_several_splits: int
    duplicate_images_across_splits: int
    near_duplicate_images_across_splits: int
    images_checked: bool
    n_images: int
    split_pairs: list[dict[str, Any]] = field(
        default_factory=list
    )  # split_a, split_b, patients, duplicates, ...
    examples: list[dict[str, Any]] = field(default_factory=list)  # the audit's first pairs
    allowed: bool = False

    @property
    def leaks(self) -> bool:
        """What blocks a run: patients or identical images in two splits."""
        return self.patients_in_several_splits > 0 or self.duplicate_images_across_splits > 0

    @property
    def summary(self) -> str:
        """One line: what leaks where, or that nothing does."""
        parts = []
        if self.patients_in_several_splits:
            parts.append(f"{self.patients_in_several_splits} patient(s) have images in several splits")
        if self.duplicate_images_across_splits:
            parts.append(
                f"{self.duplicate_images_across_splits} identical image pair(s) are in different splits"
            )
        where = ", ".join(
            f"{p['split_a']}/{p['split_b']}" for p in self.split_pairs if p["patients"] or p["duplicates"]
        )
        near = self.near_duplicate_images_across_splits
        near_text = f"{near} near-duplicate pair(s) across splits (not blocking)" if near else ""
        checked = "" if self.images_checked else " (patient ids only; images not compared)"
        if parts:
            text = "leakage: " + "; ".join(parts) + (f" ({where})" if where else "")
            return text + (f"; also {near_text}" if near_text else "") + checked
        text = f"no patient or identical image is shared between splits ({self.n_images} images){checked}"
        return text + (f"; {near_text}" if near_text else "")

    def to_json(self) -> dict[str, Any]:
        return {
            "leaks": self.leaks,
            "allowed": self.allowed,
            "summary": self.summary,
            "patients_in_several_splits": self.patients_in_several_splits,
            "duplicate_images_across_splits": self.duplicate_images_across_splits,
            "near_duplicate_images_across_splits": self.near_duplicate_images_across_splits,
            "images_checked": self.images_checked,
            "n_images": self.n_images,
            "split_pairs": self.split_pairs,
            "examples": self.examples,
        }


def task_table(config: Any, workspace: Any = None, progress: ProgressFn = no_progress) -> pd.DataFrame:
    """The rows the run would train on, with their final splits (``RunConfig`` or its dict).
    (``core.train.data.load_task_table`` does the same but imports torch: seconds the Train
    form and the report need not spend.)"""
    from core.data.index import scan
    from core.data.tasks import Task, apply_task
    from core.errors import ConfigError

    d = config if isinstance(config, dict) else config.to_dict()
    if not d.get("data"):
        raise ConfigError("no dataset given: pass --data PATH or --task NAME")
    report = scan(
        d["data"],
        d.get("format", "auto"),
        options=dict(d.get("format_options") or {}),
        workspace=workspace,
        progress=progress,
    )
    return apply_task(report.index, Task.from_dict(d["task"]) if d.get("task") else Task())


def check_leakage(
    config: Any,
    workspace: Any = None,
    *,
    images: bool | str = True,
    progress: ProgressFn = no_progress,
) -> LeakageReport:
    """Audit the splits a run's task makes. ``images``: True hashes every image (cached),
    ``"cached"`` only when every hash is cached already, False checks patient ids only."""
    from core.data.audit import audit, count_cached, hash_images

    table = task_table(config, workspace, progress)
    rows = table[table["split"].astype(str) != ""]
    paths = rows["path"].astype(str).tolist()
    if images == "cached":
        images = count_cached(paths, workspace) == len(paths)
    hashes = hash_images(paths, workspace=workspace, progress=progress) if images else None
    result = audit(rows[["path", "split", "patient_id"]].astype({"split": "str"}), hashes)
    allowed = bool(
        config.get("allow_leakage") if isinstance(config, dict) else getattr(config, "allow_leakage", False)
    )
    pairs = result.pairs.head(EXAMPLES)
    examples = [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in pairs.to_dict("records")]
    return LeakageReport(
        patients_in_several_splits=result.patients_in_several_splits,
        duplicate_images_across_splits=result.duplicate_images_across_splits,
        near_duplicate_images_across_splits=result.near_duplicate_images_across_splits,
        images_checked=result.images_checked,
        n_images=len(rows),
        split_pairs=result.split_pairs.to_dict("records"),
        examples=examples,
        allowed=allowed,
    )


def record_leakage(run_id: str, report: LeakageReport, workspace: Any = None, store: Any = None) -> None:
    """Keep what leaked in the run's info (``leakage``) when it was allowed to train anyway."""
    if not report.leaks:
        return
    from core.runs.store import RunStore

    (store or RunStore(workspace=workspace)).set_info(run_id, leakage=report.to_json())
