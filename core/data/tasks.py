"""Tasks: turn a dataset index into training targets.

A task says which column is the label, which values merge into which class, which rows are
left out, and how splits are made (keep the given ones, or a new split stratified by class
and grouped by patient so that no patient is in two splits). Tasks are saved by name in the
workspace (``tasks/NAME.json``) and copied into every run's config.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.errors import ConfigError, DataError, NotFoundError
from core.workspace import workspace_root

SPLITS = ("train", "val", "test")
SPLIT_POLICIES = ("auto", "keep", "grouped")
FILTER_OPS = ("==", "!=", "in", "not in", "<", "<=", ">", ">=", "isna", "notna", "contains")
# Names that mean "no disease": they go first, so a two-class task's positive class is index 1.
_NEGATIVE_NAMES = re.compile(r"^(normal|no[ _-]?finding|negative|healthy|no[ _-]?ncov|non[ _-]?covid|0|no lung opacity.*)$", re.I)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}$")


@dataclass(frozen=True)
class RowFilter:
    """Keep rows where ``column op value`` holds."""

    column: str
    op: str
    value: Any = None

    def __post_init__(self) -> None:
        if self.op not in FILTER_OPS:
            raise ConfigError(f"filter on {self.column!r}: unknown operator {self.op!r}; valid: {', '.join(FILTER_OPS)}")

    def mask(self, df: pd.DataFrame) -> pd.Series:
        if self.column not in df.columns:
            raise ConfigError(f"filter column {self.column!r} is not in the dataset (columns: {', '.join(map(str, df.columns))})")
        col = df[self.column]
        op, v = self.op, self.value
        if op == "isna":
            return _blank(col)
        if op == "notna":
            return ~_blank(col)
        if op in ("in", "not in"):
            values = v if isinstance(v, (list, tuple)) else [v]
            m = _text_or_number(col).isin(_keys(values, col))
            return m if op == "in" else ~m
        if op == "contains":
            return col.astype(str).str.contains(str(v), case=False, regex=False, na=False)
        if op in ("==", "!="):
            m = _text_or_number(col).isin(_keys([v], col))
            return m if op == "==" else ~m
        num = pd.to_numeric(col, errors="coerce")
        try:
            x = float(v)
        except (TypeError, ValueError):
            raise ConfigError(f"filter {self.column} {op} {v!r}: the value must be a number") from None
        return {"<": num < x, "<=": num <= x, ">": num > x, ">=": num >= x}[op].fillna(False)


@dataclass(frozen=True)
class SplitPolicy:
    """``keep`` the dataset's splits, ``grouped`` re-split by patient, or ``auto``: keep them
    when every row has one, else re-split."""

    kind: str = "auto"
    ratios: tuple[float, float, float] = (0.7, 0.15, 0.15)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in SPLIT_POLICIES:
            raise ConfigError(f"split policy {self.kind!r} unknown; valid: {', '.join(SPLIT_POLICIES)}")
        r = tuple(float(x) for x in self.ratios)
        if len(r) != 3 or any(x < 0 for x in r) or not (0.999 < sum(r) < 1.001) or r[0] <= 0:
            raise ConfigError(f"split ratios {self.ratios} must be three non-negative numbers (train > 0) summing to 1")
        object.__setattr__(self, "ratios", r)


@dataclass(frozen=True)
class Task:
    name: str = ""
    label_column: str = "label"
    merge: Mapping[str, str] = field(default_factory=dict)
    drop_values: tuple[str, ...] = ()
    filters: tuple[RowFilter, ...] = ()
    classes: tuple[str, ...] = ()
    split: SplitPolicy = field(default_factory=SplitPolicy)

    def __post_init__(self) -> None:
        object.__setattr__(self, "merge", {str(k).strip(): str(v).strip() for k, v in dict(self.merge).items()})
        object.__setattr__(self, "drop_values", tuple(str(v).strip() for v in self.drop_values))
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        filters = tuple(f if isinstance(f, RowFilter) else RowFilter(**f) for f in self.filters)
        object.__setattr__(self, "filters", filters)
        if isinstance(self.split, Mapping):
            object.__setattr__(self, "split", SplitPolicy(**self.split))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["split"]["ratios"] = list(self.split.ratios)
        d["drop_values"] = list(self.drop_values)
        d["classes"] = list(self.classes)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Task:
        unknown = set(d) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise ConfigError(f"task: unknown field(s) {', '.join(sorted(unknown))}")
        d = dict(d)
        if "split" in d and isinstance(d["split"], Mapping):
            s = dict(d["split"])
            if "ratios" in s:
                s["ratios"] = tuple(s["ratios"])
            d["split"] = SplitPolicy(**s)
        for key in ("drop_values", "filters", "classes"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)


def _text_or_number(col: pd.Series) -> pd.Series:
    # A float column holds 50.0 where the user typed "50": compare such columns as numbers.
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        return pd.to_numeric(col, errors="coerce").astype("float64")
    return col.astype(str).str.strip()


def _keys(values: Sequence[Any], col: pd.Series) -> list[Any]:
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        numbers = pd.to_numeric(pd.Series([str(x).strip() for x in values], dtype=object), errors="coerce")
        return [float(x) for x in numbers.dropna()]
    return [str(x).strip() for x in values]


def _blank(col: pd.Series) -> pd.Series:
    return col.isna() | (col.astype(str).str.strip().isin(["", "nan", "None", "NaN", "<NA>"]))


def class_values(index: pd.DataFrame, task: Task) -> pd.Series:
    """The class name of every row after merging (blank labels become NA)."""
    if task.label_column not in index.columns:
        raise ConfigError(
            f"label column {task.label_column!r} is not in the dataset (columns: {', '.join(map(str, index.columns))})"
        )
    raw = index[task.label_column]
    blank = _blank(raw)
    values = raw.astype(str).str.strip()
    if task.merge:
        merged = values.map(task.merge)
        values = merged.where(merged.notna(), values)
    return values.where(~blank)


def order_classes(names: Sequence[str]) -> list[str]:
    """Negative-sounding names first (``normal``, ``No Finding``, ...), the rest sorted."""
    names = sorted(set(names), key=lambda s: s.lower())
    return [n for n in names if _NEGATIVE_NAMES.match(n)] + [n for n in names if not _NEGATIVE_NAMES.match(n)]


def apply_task(index: pd.DataFrame, task: Task) -> pd.DataFrame:
    """Rows kept by the task with ``class_name``, ``target`` (class index) and a final
    ``split``. Raises ConfigError when the result cannot be trained on."""
    df = index.copy()
    df["class_name"] = class_values(df, task)
    keep = df["class_name"].notna()
    if task.drop_values:
        keep &= ~df["class_name"].isin(task.drop_values) & ~df[task.label_column].astype(str).str.strip().isin(
            task.drop_values
        )
    for f in task.filters:
        keep &= f.mask(df)
    df = df[keep.to_numpy()].reset_index(drop=True)
    if df.empty:
        raise ConfigError(f"task {task.name or '(unnamed)'}: no rows left after merges, drops and filters")
    classes = list(task.classes) or order_classes(df["class_name"].unique())
    missing = sorted(set(df["class_name"].unique()) - set(classes))
    if missing:
        df = df[df["class_name"].isin(classes)].reset_index(drop=True)
    df["target"] = df["class_name"].map({c: i for i, c in enumerate(classes)}).astype("int64")
    df.attrs["classes"] = classes
    df["split"] = assign_splits(df, task.split)
    return df


def assign_splits(df: pd.DataFrame, policy: SplitPolicy) -> pd.Series:
    given = df["split"].astype(str).str.strip().str.lower() if "split" in df.columns else pd.Series("", index=df.index)
    kind = policy.kind
    if kind == "auto":
        kind = "keep" if given.isin(SPLITS).all() and given.eq("train").any() else "grouped"
    if kind == "keep":
        bad = ~given.isin(SPLITS)
        if bad.any():
            raise ConfigError(
                f"split policy 'keep': {int(bad.sum())} rows have no train/val/test split; choose a grouped split instead"
            )
        return given
    groups = df["patient_id"].astype(str).str.strip() if "patient_id" in df.columns else pd.Series("", index=df.index)
    groups = groups.where(groups != "", "__row" + df.index.astype(str))
    return pd.Series(grouped_split(df["class_name"].to_numpy(), groups.to_numpy(), policy.ratios, policy.seed), index=df.index)


def grouped_split(labels: np.ndarray, groups: np.ndarray, ratios: Sequence[float], seed: int) -> np.ndarray:
    """Assign each group (patient) to one split, stratified by the group's majority class
    (ties: the first class in sorted order).

    Groups of each class are shuffled and dealt greedily into the split that is furthest
    below its target share of that class's images, so class shares per split stay close to
    the whole even when patients have different numbers of images.
    """
    rng = np.random.default_rng(seed)
    # Vectorised counting: a 30,000-image index has ~26,000 patients, too many for
    # per-group pandas calls (seconds) on every edit of the task builder.
    g_codes, g_names = pd.factorize(np.asarray(groups, dtype=object).astype(str), sort=True)
    l_codes, l_names = pd.factorize(np.asarray(labels, dtype=object).astype(str), sort=True)
    n_labels = len(l_names)
    counts = np.bincount(g_codes * n_labels + l_codes, minlength=len(g_names) * n_labels)
    counts = counts.reshape(len(g_names), n_labels)
    sizes = counts.sum(axis=1)
    major = counts.argmax(axis=1)
    assigned = np.zeros(len(g_names), dtype=np.int64)
    for cls in range(n_labels):
        members = np.flatnonzero(major == cls)  # in sorted group order
        members = members[rng.permutation(len(members))]
        # Largest groups first so the greedy fill can balance with the small ones.
        members = members[np.argsort(-sizes[members], kind="stable")]
        assigned[members] = _deal(sizes[members].tolist(), ratios)
    return np.array(SPLITS, dtype=object)[assigned[g_codes]]


def _deal(sizes: list[int], ratios: Sequence[float]) -> list[int]:
    """Give each group (in order) to the split furthest below its target number of images
    (ties: the earlier split). Plain floats: this loop runs once per patient on every edit."""
    total = float(sum(sizes)) or 1.0
    t0, t1, t2 = (float(r) * total if r > 0 else -np.inf for r in ratios)
    f0 = f1 = f2 = 0.0
    out = []
    for size in sizes:
        d0, d1, d2 = t0 - f0, t1 - f1, t2 - f2
        if d0 >= d1 and d0 >= d2:
            out.append(0)
            f0 += size
        elif d1 >= d2:
            out.append(1)
            f1 += size
        else:
            out.append(2)
            f2 += size
    return out


def class_balance(df: pd.DataFrame) -> pd.DataFrame:
    """Counts per split (rows) and class (columns) of an applied task."""
    classes = df.attrs.get("classes") or order_classes(df["class_name"].unique())
    table = pd.crosstab(df["split"], df["class_name"]).reindex(columns=classes, fill_value=0)
    return table.reindex([s for s in SPLITS if s in table.index])


# -- saved tasks -------------------------------------------------------------------------


def _tasks_dir(workspace: str | Path | None = None) -> Path:
    d = workspace_root(workspace) / "tasks"
    d.mkdir(parents=True, exist_ok=True)
    return d


def save_task(task: Task, dataset: Mapping[str, Any], workspace: str | Path | None = None) -> Path:
    """Save ``task`` with the dataset it applies to (``{"path", "format", "options"}``)."""
    from core.fileio import atomic_write_json

    if not _NAME_RE.match(task.name or ""):
        raise ConfigError(f"task name {task.name!r}: use 1-64 letters, digits, spaces, '.', '_' or '-'")
    path = _tasks_dir(workspace) / f"{task.name}.json"
    atomic_write_json(path, {"task": task.to_dict(), "dataset": dict(dataset)})
    return path


def load_task(name: str, workspace: str | Path | None = None) -> tuple[Task, dict[str, Any]]:
    path = _tasks_dir(workspace) / f"{name}.json"
    if not path.exists():
        have = ", ".join(list_tasks(workspace)) or "none saved yet"
        raise NotFoundError(f"no saved task {name!r} in {path.parent} (saved: {have})")
    try:
        d = json.loads(path.read_text())
        return Task.from_dict(d["task"]), dict(d["dataset"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not a valid saved task ({exc})") from None


def list_tasks(workspace: str | Path | None = None) -> list[str]:
    return sorted(p.stem for p in _tasks_dir(workspace).glob("*.json"))


def delete_task(name: str, workspace: str | Path | None = None) -> None:
    (_tasks_dir(workspace) / f"{name}.json").unlink(missing_ok=True)
