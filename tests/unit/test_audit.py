"""The leakage audit: patients in several splits, exact and near duplicates across splits,
the hash cache, the re-split task, and ``python -m core audit --json``."""

from __future__ import annotations

import io
import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core.data import audit as au
from core.data.index import scan
from core.data.tasks import apply_task


def _radiograph(rng: np.random.Generator, size: int = 128) -> np.ndarray:
    """A smooth random picture: distinct draws are far apart in pHash, as distinct films are."""
    field = rng.normal(0, 1, (size // 8, size // 8))
    big = np.kron(field, np.ones((8, 8)))
    img = Image.fromarray(((big - big.min()) / np.ptp(big) * 200 + 20).astype(np.uint8)).resize((size, size),
                                                                                               Image.Resampling.BILINEAR)  # fmt: skip
    return np.asarray(img)


def _imagefolder(root, per_class: int = 4, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for cls in ("normal", "pneumonia"):
        (root / "train" / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(_radiograph(rng)).save(root / "train" / cls / f"{cls}{i}.png")


def test_val_copied_from_train_reports_every_val_image(tmp_path, workspace):
    root = tmp_path / "ds"
    _imagefolder(root)
    shutil.copytree(root / "train", root / "val")
    index = scan(root).index
    hashes = au.hash_images(index["path"].tolist())
    report = au.audit(index, hashes)
    val = sorted(index.loc[index["split"] == "val", "path"])
    dup = report.pairs[report.pairs["kind"] == "duplicate"]
    assert report.duplicate_images_across_splits == len(val) == 8
    assert sorted(dup["path_b"]) == val
    assert all(a.replace("/train/", "/val/") == b for a, b in zip(dup["path_a"], dup["path_b"], strict=True))
    assert report.near_duplicate_images_across_splits == 0  # identical files are not counted twice
    assert report.split_pairs.set_index(["split_a", "split_b"]).loc[("train", "val"), "duplicates"] == 8


def test_near_duplicate_brightened_and_reencoded_is_found(tmp_path, workspace):
    root = tmp_path / "ds"
    _imagefolder(root)
    (root / "test" / "normal").mkdir(parents=True)
    original = np.asarray(Image.open(root / "train" / "normal" / "normal0.png"))
    brighter = np.clip(original.astype(int) + 12, 0, 255).astype(np.uint8)
    Image.fromarray(brighter).save(root / "test" / "normal" / "copy.jpg", quality=80)
    Image.fromarray(_radiograph(np.random.default_rng(99))).save(root / "test" / "normal" / "other.png")
    index = scan(root).index
    report = au.audit(index, au.hash_images(index["path"].tolist()))
    near = report.pairs[report.pairs["kind"] == "near_duplicate"]
    assert report.near_duplicate_images_across_splits == 1
    assert near.iloc[0]["path_a"].endswith("train/normal/normal0.png")
    assert near.iloc[0]["path_b"].endswith("test/normal/copy.jpg")
    assert near.iloc[0]["distance"] <= au.NEAR_THRESHOLD
    assert report.duplicate_images_across_splits == 0


def test_patients_in_two_splits_are_counted_once_each():
    index = pd.DataFrame({
        "path": [f"/d/{i}.png" for i in range(7)],
        "label": ["a"] * 7,
        "split": ["train", "val", "test", "train", "train", "val", ""],
        "patient_id": ["p1", "p1", "p1", "p2", "p3", "p3", "p4"],
    })  # fmt: skip
    report = au.audit(index)
    assert report.patients_in_several_splits == 2
    assert not report.images_checked
    pairs = report.pairs
    assert set(pairs["kind"]) == {"patient"}
    assert sorted(zip(pairs["patient_id"], pairs["split_a"], pairs["split_b"], strict=True)) == [
        ("p1", "train", "test"), ("p1", "train", "val"), ("p1", "val", "test"),
        ("p3", "train", "val"),
    ]  # fmt: skip
    assert dict(zip(report.leaking_patients["patient_id"], report.leaking_patients["splits"], strict=True)) == {
        "p1": "train, val, test", "p3": "train, val"}  # fmt: skip
    assert report.to_json()["pairs"][0]["patient_id"] == "p1"


def test_hashes_are_cached_until_a_file_changes(tmp_path, workspace, monkeypatch):
    root = tmp_path / "ds"
    _imagefolder(root, per_class=2)
    paths = sorted(str(p) for p in root.rglob("*.png"))
    first = au.hash_images(paths)
    assert au.count_cached(paths) == len(paths)
    assert au.cached_hashes(paths)["sha256"].tolist() == first["sha256"].tolist()
    assert au.cached_hashes([*paths, str(tmp_path / "new.png")]) is None
    read = []
    real = au.hash_file
    monkeypatch.setattr(au, "hash_file", lambda p: read.append(p) or real(p))
    again = au.hash_images(paths)
    assert read == [] and again["sha256"].tolist() == first["sha256"].tolist()
    os.utime(paths[0], ns=(10**9, 10**9))
    au.hash_images(paths)
    assert read == [paths[0]]


def test_undecodable_files_still_compare_by_bytes(tmp_path, workspace):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(b"not an image at all")
    b.write_bytes(b"not an image at all")
    hashes = au.hash_images([str(a), str(b)])
    assert hashes["phash"].isna().all() and hashes["error"].str.len().gt(0).all()
    index = pd.DataFrame(
        {"path": [str(a), str(b)], "label": "x", "split": ["train", "val"], "patient_id": ""}
    )
    report = au.audit(index, hashes)
    assert report.duplicate_images_across_splits == 1 and len(report.failures) == 2


def test_perceptual_hash_ignores_brightness_and_jpeg_but_not_content():
    rng = np.random.default_rng(5)
    img = _radiograph(rng, 256)
    buf = io.BytesIO()
    Image.fromarray(np.clip(img.astype(int) + 15, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=75)
    copy = np.asarray(Image.open(buf))
    other = _radiograph(rng, 256)
    h = au.perceptual_hash(img)
    assert len(h) * 8 == au.HASH_BITS
    assert au.hamming(h, au.perceptual_hash(copy)) <= au.NEAR_THRESHOLD
    assert au.hamming(h, au.perceptual_hash(other)) > 3 * au.NEAR_THRESHOLD


def test_close_pairs_matches_brute_force():
    rng = np.random.default_rng(0)
    base = [rng.bytes(32) for _ in range(300)]
    flipped = [
        bytes(x ^ (0xFF if j < k else 0) for j, x in enumerate(h))
        for k, h in zip(range(300), base, strict=True)
    ]
    found = {(i, j) for i, j, _ in au.close_pairs(base, flipped, 20)}
    brute = {(i, j) for i in range(300) for j in range(300) if au.hamming(base[i], flipped[j]) <= 20}
    assert found == brute and (0, 0) in found and (2, 2) in found and (3, 3) not in found
    within = {(i, j) for i, j, _ in au.close_pairs(base[:50] + base[:2], base[:50] + base[:2], 0, same=True)}
    assert within == {(0, 50), (1, 51)}


def test_resplit_task_keeps_patients_and_copies_on_one_side(tmp_path, workspace):
    root = tmp_path / "ds"
    _imagefolder(root, per_class=6)
    shutil.copytree(root / "train", root / "val")
    index = scan(root).index
    index["patient_id"] = [f"p{i // 2}" for i in range(len(index))]
    hashes = au.hash_images(index["path"].tolist())
    drop = au.copies_to_drop(au.duplicates_within(hashes))
    assert len(drop) == 12 and all("/val/" in p for p in drop)
    task = au.resplit_task("fixed", drop, ratios=(0.5, 0.25, 0.25), seed=1)
    out = apply_task(index, task)
    assert len(out) == 12
    assert out.groupby("patient_id")["split"].nunique().max() == 1
    fixed = au.audit(out.assign(label=out["class_name"]), hashes)
    assert fixed.duplicate_images_across_splits == 0 and fixed.patients_in_several_splits == 0


def test_cli_audit_json(tmp_path, workspace, capsys):
    from core.cli import main

    root = tmp_path / "ds"
    _imagefolder(root, per_class=2)
    shutil.copytree(root / "train", root / "val")
    assert main(["audit", str(root), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"patients_in_several_splits", "duplicate_images_across_splits",
                        "near_duplicate_images_across_splits", "pairs"}  # fmt: skip
    assert out["duplicate_images_across_splits"] == 4 and out["patients_in_several_splits"] == 0
    assert {p["kind"] for p in out["pairs"]} == {"duplicate"}
    assert set(out["pairs"][0]) == {"kind", "split_a", "split_b", "path_a", "path_b"}
    assert main(["audit", str(tmp_path / "missing"), "--json"]) == 2
    assert "missing" in capsys.readouterr().err


@pytest.mark.shared_data
def test_real_dataset_with_val_copied_from_train(shared_data, tmp_path, workspace):
    source = shared_data / "covid-ct"
    if not source.is_dir():
        pytest.skip("covid-ct sample not present")
    root = tmp_path / "ct"
    for cls in ("CT_COVID", "CT_NonCOVID"):
        (root / "train" / cls).mkdir(parents=True)
        for f in sorted((source / cls).iterdir())[:15]:
            shutil.copy2(f, root / "train" / cls / f.name)
    shutil.copytree(root / "train", root / "val")
    index = scan(root).index
    report = au.audit(index, au.hash_images(index["path"].tolist()))
    val = set(index.loc[index["split"] == "val", "path"])
    reported = set(report.pairs.loc[report.pairs["kind"] == "duplicate", "path_b"])
    assert reported == val and report.duplicate_images_across_splits == len(val) == 30
