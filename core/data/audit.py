"""Leakage audit: the same patient, or the same picture, in more than one split.

Three checks over the rows that have a split:

- **patients**: a patient id present in two or more splits;
- **exact duplicates**: files whose bytes are identical (SHA-256 of the file);
- **near duplicates**: pictures that look the same after re-encoding, brightening or
  resizing: a 256-bit perceptual hash (pHash: the decoded image in gray, resized to 32x32,
  2-D DCT, one bit per coefficient of the 16x16 lowest frequencies, set when above their
  median) within ``NEAR_THRESHOLD`` bits (Hamming distance).

The threshold was measured on real and synthetic radiographs: a copy brightened by 12 levels
and re-saved as JPEG (quality 80) stayed within 14 bits of its original on the Cohen
COVID-19 collection and on COVID-CT; the closest pair of distinct pictures was 20 bits apart
on the synthetic demo (where every image comes from one renderer) and 56 bits on Cohen's
radiographs. A 64-bit hash is not enough: distinct chest films often share all 64 bits.

Hashes are cached in the workspace (``cache/hashes/hashes.sqlite``), keyed by path, file
size and modification time, so a second audit reads no image that did not change.

Counts are pairs of images in different splits (each unordered pair once); a near-duplicate
pair is not also counted when the two files are exact duplicates.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

from core.progress import ProgressFn, no_progress

NEAR_THRESHOLD = 18
HASH_BITS = 256
HASH_VERSION = 1
SPLIT_ORDER = ("train", "val", "test")
_DCT_SIZE = 32
_LOW = 16
PAIR_COLUMNS = ["kind", "split_a", "split_b", "path_a", "path_b", "patient_id", "distance"]


# ---------------------------------------------------------------- hashing


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)
    return np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n))


_DCT = _dct_matrix(_DCT_SIZE)


def perceptual_hash(gray: np.ndarray) -> bytes:
    """The 256-bit pHash of a uint8 gray image, as 32 bytes."""
    from core.data.images import resize

    small = resize(gray, _DCT_SIZE, _DCT_SIZE).astype(np.float64)
    low = (_DCT @ small @ _DCT.T)[:_LOW, :_LOW].ravel()
    # The DC term is the mean brightness: left out of the median so brightening changes nothing.
    bits = low > np.median(low[1:])
    return np.packbits(bits).tobytes()


def hamming(a: bytes, b: bytes) -> int:
    return int(np.bitwise_count(np.frombuffer(a, np.uint8) ^ np.frombuffer(b, np.uint8)).sum())


@dataclass(frozen=True)
class FileHash:
    path: str
    sha256: str
    phash: bytes | None  # None when the image cannot be decoded
    error: str = ""


def hash_file(path: str) -> FileHash:
    """SHA-256 of the bytes and the perceptual hash of the decoded image (one read)."""
    from core.data.images import ImageError, read_image_bytes

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        return FileHash(path, "", None, f"cannot read ({exc.strerror or exc})")
    sha = hashlib.sha256(data).hexdigest()
    try:
        return FileHash(path, sha, perceptual_hash(read_image_bytes(data, path)))
    except ImageError as exc:
        return FileHash(path, sha, None, exc.reason)


class HashCache:
    """``path -> (size, mtime_ns, sha256, phash, error)`` in SQLite; a row counts only while
    the file keeps its size and modification time."""

    def __init__(self, workspace: str | os.PathLike[str] | None = None) -> None:
        from core.workspace import cache_dir

        self.path = cache_dir("hashes", workspace) / "hashes.sqlite"

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=30)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute(
            "CREATE TABLE IF NOT EXISTS hashes (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER,"
            " version INTEGER, sha256 TEXT, phash BLOB, error TEXT)"
        )
        return con

    def get(self, paths: Sequence[str]) -> dict[str, FileHash]:
        stamps = {p: _stamp(p) for p in paths}
        found: dict[str, FileHash] = {}
        con = self._connect()
        try:
            for i in range(0, len(paths), 500):
                chunk = list(paths[i : i + 500])
                marks = ",".join("?" * len(chunk))
                rows = con.execute(
                    f"SELECT path, size, mtime_ns, sha256, phash, error FROM hashes WHERE version = ? AND path IN ({marks})",
                    [HASH_VERSION, *chunk],
                )
                for path, size, mtime, sha, phash, error in rows:
                    if stamps.get(path) == (size, mtime):
                        found[path] = FileHash(
                            path, sha, bytes(phash) if phash is not None else None, error or ""
                        )
        finally:
            con.close()
        return found

    def put(self, hashes: Sequence[FileHash]) -> None:
        rows = []
        for h in hashes:
            size, mtime = _stamp(h.path)
            if size >= 0:
                rows.append((h.path, size, mtime, HASH_VERSION, h.sha256, h.phash, h.error))
        con = self._connect()
        try:
            with con:
                con.executemany("INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        finally:
            con.close()


def _stamp(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return -1, -1
    return st.st_size, st.st_mtime_ns


def count_cached(paths: Sequence[str], workspace: str | os.PathLike[str] | None = None) -> int:
    """How many of ``paths`` have a current hash in the cache."""
    return len(HashCache(workspace).get(list(paths)))


def cached_hashes(
    paths: Sequence[str], workspace: str | os.PathLike[str] | None = None
) -> pd.DataFrame | None:
    """``hash_images(paths)`` when every path has a current hash in the cache (no image is
    read), else None."""
    paths = list(dict.fromkeys(paths))
    known = HashCache(workspace).get(paths)
    return _frame([known[p] for p in paths]) if len(known) == len(paths) else None


def hash_images(
    paths: Sequence[str],
    *,
    workspace: str | os.PathLike[str] | None = None,
    progress: ProgressFn = no_progress,
    workers: int | None = None,
) -> pd.DataFrame:
    """``path, sha256, phash, error`` for every path, from the cache where current."""
    cache = HashCache(workspace)
    paths = list(dict.fromkeys(paths))
    known = cache.get(paths)
    todo = [p for p in paths if p not in known]
    progress(len(known), len(paths), "hashing images")
    workers = workers or min(4, (os.cpu_count() or 2) * 2)
    batch: list[FileHash] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i, h in enumerate(pool.map(hash_file, todo)):
            known[h.path] = h
            batch.append(h)
            if len(batch) >= 256 or i == len(todo) - 1:
                cache.put(batch)
                batch = []
                progress(len(paths) - len(todo) + i + 1, len(paths), "hashing images")
    return _frame([known[p] for p in paths])


def _frame(rows: list[FileHash]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "path": pd.Series([h.path for h in rows], dtype="str"),
            "sha256": pd.Series([h.sha256 for h in rows], dtype="str"),
            "phash": pd.Series([h.phash for h in rows], dtype=object),
            "error": pd.Series([h.error for h in rows], dtype="str"),
        }
    )


# ---------------------------------------------------------------- the audit


@dataclass
class AuditReport:
    patients_in_several_splits: int
    duplicate_images_across_splits: int
    near_duplicate_images_across_splits: int
    pairs: pd.DataFrame  # PAIR_COLUMNS
    split_pairs: pd.DataFrame  # split_a, split_b, patients, duplicates, near_duplicates
    leaking_patients: pd.DataFrame  # patient_id, splits, n_images
    splits: list[str]
    images_checked: bool  # False when only patient ids were audited
    n_images: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)  # images that could not be decoded
    threshold: int = NEAR_THRESHOLD

    def to_json(self) -> dict[str, Any]:
        pairs = []
        for row in self.pairs.itertuples(index=False):
            item = {"kind": row.kind, "split_a": row.split_a, "split_b": row.split_b,
                    "path_a": row.path_a, "path_b": row.path_b}  # fmt: skip
            if row.kind == "patient":
                item["patient_id"] = row.patient_id
            if row.kind == "near_duplicate":
                item["distance"] = int(row.distance)
            pairs.append(item)
        return {
            "patients_in_several_splits": self.patients_in_several_splits,
            "duplicate_images_across_splits": self.duplicate_images_across_splits,
            "near_duplicate_images_across_splits": self.near_duplicate_images_across_splits,
            "pairs": pairs,
        }


def _splits_of(index: pd.DataFrame) -> list[str]:
    present = set(index["split"].fillna("").astype(str)) - {""}
    return [s for s in SPLIT_ORDER if s in present] + sorted(present - set(SPLIT_ORDER))


def _split_pairs(splits: list[str]) -> list[tuple[str, str]]:
    return list(combinations(splits, 2))


def patient_leaks(index: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Patients in several splits (``patient_id, splits, n_images``) and one pair of example
    images per patient and split pair."""
    rows = pd.DataFrame({
        "path": index["path"].astype(str),
        "split": index["split"].fillna("").astype(str),
        "patient_id": index["patient_id"].fillna("").astype(str).str.strip(),
    })  # fmt: skip
    rows = rows[(rows["split"] != "") & (rows["patient_id"] != "")]
    n_splits = rows.groupby("patient_id")["split"].nunique()
    rows = rows[rows["patient_id"].isin(n_splits.index[n_splits > 1])]
    order = {s: i for i, s in enumerate(_splits_of(index))}
    rows = rows.assign(rank=rows["split"].map(order)).sort_values(["patient_id", "rank", "path"])
    first = rows.drop_duplicates(["patient_id", "split"])
    summary = pd.DataFrame({
        "splits": first.groupby("patient_id", sort=True)["split"].agg(", ".join),
        "n_images": rows.groupby("patient_id", sort=True).size(),
    }).rename_axis("patient_id").reset_index()  # fmt: skip
    both = first.merge(first, on="patient_id", suffixes=("_a", "_b"))
    both = both[both["rank_a"] < both["rank_b"]].sort_values(["patient_id", "rank_a", "rank_b"])
    pairs = pd.DataFrame({
        "kind": "patient", "split_a": both["split_a"], "split_b": both["split_b"], "path_a": both["path_a"],
        "path_b": both["path_b"], "patient_id": both["patient_id"], "distance": np.nan,
    }, columns=PAIR_COLUMNS).reset_index(drop=True)  # fmt: skip
    return summary, pairs


def exact_duplicates(rows: pd.DataFrame, order: dict[str, int]) -> pd.DataFrame:
    """Pairs of byte-identical files in different splits (``rows``: path, split, sha256)."""
    rows = rows[rows["sha256"] != ""]
    dup = rows[rows.duplicated("sha256", keep=False)]
    pairs = []
    for _, group in dup.groupby("sha256", sort=False):
        group = group.assign(rank=group["split"].map(order)).sort_values(["rank", "path"])
        for a, b in combinations(group[["split", "path"]].itertuples(index=False), 2):
            if a.split != b.split:
                pairs.append(("duplicate", a.split, b.split, a.path, b.path, None, 0))
    return pd.DataFrame(pairs, columns=PAIR_COLUMNS)


def _as_words(hashes: Sequence[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(hashes), dtype=np.uint64).reshape(len(hashes), HASH_BITS // 64)


def close_pairs(
    a: Sequence[bytes],
    b: Sequence[bytes],
    threshold: int,
    *,
    same: bool = False,
    progress: ProgressFn = no_progress,
) -> Iterator[tuple[int, int, int]]:
    """``(i, j, distance)`` for every hash ``a[i]``, ``b[j]`` within ``threshold`` bits;
    ``same=True`` when ``a`` is ``b`` (each unordered pair once, no self pairs)."""
    if not len(a) or not len(b):
        return
    wa, wb = _as_words(a), _as_words(b)
    columns = [np.ascontiguousarray(wb[:, k]) for k in range(wb.shape[1])]
    # Word by word on 2-D blocks of about 2M pairs: 6x faster than one 3-D XOR summed over
    # its last axis, and the temporaries stay near 16 MB whatever the dataset size.
    chunk = max(1, (1 << 21) // len(wb))
    for start in range(0, len(wa), chunk):
        block = wa[start : start + chunk]
        # uint8 counts per word; their sum needs 16 bits (256 bits differ at most).
        dist = np.bitwise_count(block[:, 0, None] ^ columns[0][None, :]).astype(np.uint16)
        for k in range(1, len(columns)):
            dist += np.bitwise_count(block[:, k, None] ^ columns[k][None, :])
        hit = dist <= threshold
        if same:
            hit &= np.arange(len(wb))[None, :] > (start + np.arange(len(block)))[:, None]
        for i, j in zip(*np.nonzero(hit), strict=True):
            yield start + int(i), int(j), int(dist[i, j])
        progress(min(start + chunk, len(wa)), len(wa), "comparing pictures")


def near_duplicates(rows: pd.DataFrame, splits: list[str], threshold: int) -> pd.DataFrame:
    """Pairs in different splits within ``threshold`` bits that are not byte-identical."""
    rows = rows[rows["phash"].notna()]
    pairs = []
    for sa, sb in _split_pairs(splits):
        a, b = rows[rows["split"] == sa], rows[rows["split"] == sb]
        for i, j, d in close_pairs(a["phash"].tolist(), b["phash"].tolist(), threshold):
            ra, rb = a.iloc[i], b.iloc[j]
            if ra["sha256"] and ra["sha256"] == rb["sha256"]:
                continue
            pairs.append(("near_duplicate", sa, sb, ra["path"], rb["path"], None, d))
    return pd.DataFrame(pairs, columns=PAIR_COLUMNS)


def duplicates_within(
    hashes: pd.DataFrame, threshold: int = NEAR_THRESHOLD, progress: ProgressFn = no_progress
) -> pd.DataFrame:
    """Duplicate and near-duplicate pairs anywhere in ``hashes``, whatever their split: the
    copies a split made later could put on both sides."""
    rows = hashes.assign(split="").reset_index(drop=True)
    exact = exact_duplicates(rows.assign(split=rows["path"]), {})  # every path its own "split"
    exact = exact.assign(split_a="", split_b="")
    pairs = []
    known = rows[rows["phash"].notna()].reset_index(drop=True)
    phashes, shas, paths = known["phash"].tolist(), known["sha256"].tolist(), known["path"].tolist()
    for i, j, d in close_pairs(phashes, phashes, threshold, same=True, progress=progress):
        if not (shas[i] and shas[i] == shas[j]):
            pairs.append(("near_duplicate", "", "", paths[i], paths[j], None, d))
    near = pd.DataFrame(pairs, columns=PAIR_COLUMNS)
    return (
        pd.concat([f for f in (exact, near) if len(f)], ignore_index=True)
        if len(exact) or len(near)
        else near
    )


def audit(
    index: pd.DataFrame, hashes: pd.DataFrame | None = None, threshold: int = NEAR_THRESHOLD
) -> AuditReport:
    """Audit the splits of ``index``; ``hashes`` (from ``hash_images``) adds the image checks."""
    splits = _splits_of(index)
    order = {s: i for i, s in enumerate(splits)}
    leaking, patient_pairs = patient_leaks(index)
    frames = [patient_pairs]
    failures: list[dict[str, str]] = []
    rows = index.loc[index["split"].fillna("").astype(str) != "", ["path", "split"]]
    if hashes is not None and len(rows):
        rows = rows.merge(hashes, on="path", how="left")
        rows["sha256"] = rows["sha256"].fillna("")
        rows["split"] = rows["split"].astype(str)
        failures = [
            {"path": p, "reason": e} for p, e in zip(rows["path"], rows["error"].fillna(""), strict=True) if e
        ]
        frames += [exact_duplicates(rows, order), near_duplicates(rows, splits, threshold)]
    pairs = pd.concat([f for f in frames if len(f)], ignore_index=True) if any(len(f) for f in frames) else (
        pd.DataFrame(columns=PAIR_COLUMNS))  # fmt: skip
    counts = pairs["kind"].value_counts()
    return AuditReport(
        patients_in_several_splits=len(leaking),
        duplicate_images_across_splits=int(counts.get("duplicate", 0)),
        near_duplicate_images_across_splits=int(counts.get("near_duplicate", 0)),
        pairs=pairs,
        split_pairs=_per_split_pair(pairs, splits),
        leaking_patients=leaking,
        splits=splits,
        images_checked=hashes is not None,
        n_images=len(rows),
        failures=failures,
        threshold=threshold,
    )


def _per_split_pair(pairs: pd.DataFrame, splits: list[str]) -> pd.DataFrame:
    out = []
    for sa, sb in _split_pairs(splits):
        part = pairs[(pairs["split_a"] == sa) & (pairs["split_b"] == sb)]
        kinds = part["kind"].value_counts()
        out.append((sa, sb, int(kinds.get("patient", 0)), int(kinds.get("duplicate", 0)),
                    int(kinds.get("near_duplicate", 0))))  # fmt: skip
    return pd.DataFrame(out, columns=["split_a", "split_b", "patients", "duplicates", "near_duplicates"])


# ---------------------------------------------------------------- the fix


def copies_to_drop(pairs: pd.DataFrame) -> list[str]:
    """The images to leave out so that one picture of every group of (near-)duplicates is
    kept (the first path in sorted order); ``pairs`` from ``audit`` or ``duplicates_within``."""
    parent: dict[str, str] = {}

    def find(p: str) -> str:
        while parent.get(p, p) != p:
            p = parent[p]
        return p

    dups = pairs[pairs["kind"].isin(["duplicate", "near_duplicate"])]
    for a, b in zip(dups["path_a"], dups["path_b"], strict=True):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return sorted(p for p in parent if find(p) != p)


def resplit_task(
    name: str,
    drop: Sequence[str] = (),
    *,
    label_column: str = "label",
    ratios: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
):
    """A task that re-splits by patient (stratified by class), leaving out the images in
    ``drop`` (the extra copies of duplicates, ``copies_to_drop``) so no picture is in two splits."""
    from core.data.tasks import RowFilter, SplitPolicy, Task

    filters = (RowFilter("path", "not in", sorted(drop)),) if drop else ()
    return Task(name=name, label_column=label_column, filters=filters,
                split=SplitPolicy("grouped", tuple(ratios), seed))  # fmt: skip
