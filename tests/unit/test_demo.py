"""The demo dataset: deterministic, split by patient, lesion = the only class signal, and the
real-world mix of formats and metadata that the readers must cope with."""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from core.cli import main
from core.data import demo
from core.data.demo import (
    CLASSES,
    MARKER,
    Anatomy,
    Shot,
    demo_info,
    lung_fields,
    plan_demo,
    render_chest,
    write_demo,
)
from core.errors import ChestLabError

SMALL = 14  # patients of seed 0: 28 images, the fewest in which every format appears


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _display(path: Path) -> tuple[np.ndarray, str]:
    """The image as a viewer shows it, in [0, 1], and its storage kind."""
    if path.suffix == ".dcm":
        import pydicom

        ds = pydicom.dcmread(path)
        m = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        c, w = float(ds.WindowCenter), float(ds.WindowWidth)
        out = np.clip((m - (c - 0.5)) / (w - 1) + 0.5, 0.0, 1.0)
        if ds.PhotometricInterpretation == "MONOCHROME1":
            return 1.0 - out, "dcm1"
        return out, "dcm2"
    from PIL import Image

    with Image.open(path) as im:
        a = np.asarray(im)
    if a.dtype == np.uint16:
        return a / 65535.0, "png16"
    assert a.dtype == np.uint8 and a.ndim == 2
    return a / 255.0, "png8"


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo") / "d"
    write_demo(root, seed=0, n_patients=SMALL, workers=1)
    return root


# --- the plan: classes, splits, nuisances -------------------------------------------------


def test_full_demo_class_shares_and_size():
    plan = plan_demo(0)
    assert len(plan) >= 900
    shares = Counter(i.label for i in plan)
    for name, want in zip(CLASSES, (0.6, 0.3, 0.1), strict=True):
        assert abs(shares[name] / len(plan) - want) < 0.03, shares


def test_splits_are_by_patient_and_hold_every_class():
    plan = plan_demo(0)
    splits_of = {}
    for i in plan:
        splits_of.setdefault(i.patient_id, set()).add((i.split, i.label))
    assert all(len(s) == 1 for s in splits_of.values()), "a patient in two splits or two classes"
    by_split = Counter(i.split for i in plan)
    for split, want in (("train", 0.70), ("val", 0.15), ("test", 0.15)):
        assert abs(by_split[split] / len(plan) - want) < 0.04, by_split
        assert {i.label for i in plan if i.split == split} == set(CLASSES)
    per_patient = Counter(i.patient_id for i in plan)
    assert set(per_patient.values()) == {1, 2, 3, 4}


def test_same_patient_same_body_different_exposure():
    groups = demo._patient_groups(plan_demo(0))
    multi = [g for g in groups if len(g) > 1]
    assert multi
    for g in multi[:20]:
        assert len({i.anatomy for i in g}) == 1
        assert len({i.shot for i in g}) == len(g)
        assert len({(i.age, i.sex) for i in g}) == 1


def test_formats_and_metadata_do_not_depend_on_class():
    plan = plan_demo(0)
    for name in CLASSES:
        mine = [i for i in plan if i.label == name]
        assert {i.fmt for i in mine} == {"png8", "png16", "dcm1", "dcm2"}, name
        fmt = Counter(i.fmt for i in mine)
        assert abs(fmt["png8"] / len(mine) - 0.8) < 0.08
        assert abs(np.mean([i.age for i in mine]) - np.mean([i.age for i in plan])) < 4
        assert abs(np.mean([i.sex == "F" for i in mine]) - 0.5) < 0.1
        assert abs(np.mean([i.view == "AP" for i in mine]) - 0.4) < 0.1
        assert abs(np.mean([i.shot.brightness for i in mine])) < 0.015
    for field in ("csv_age", "csv_sex", "csv_view"):
        missing = np.mean([getattr(i, field) is None for i in plan])
        assert 0.02 < missing < 0.08, field


# --- the renderer: anatomy, lesion, boxes ------------------------------------------------


def _case(k: int) -> tuple[Anatomy, Shot]:
    rng = np.random.default_rng([99, k])
    return Anatomy.random(rng, female=bool(k % 2)), Shot.random(rng, ap=bool(k % 3 == 0))


@pytest.mark.parametrize("lesion", ["pneumonia", "covid"])
def test_lesion_is_in_its_boxes_inside_the_lungs_and_nowhere_else(lesion):
    lower_zone = []
    for k in range(6):
        anatomy, shot = _case(k)
        img, boxes = render_chest(
            np.random.default_rng(k), size=256, anatomy=anatomy, shot=shot, lesion=lesion
        )
        clean, none = render_chest(
            np.random.default_rng(k), size=256, anatomy=anatomy, shot=shot, lesion=None
        )
        assert img.shape == (256, 256) and img.dtype == np.float32 and none == []
        assert len(boxes) == (1 if lesion == "pneumonia" else 2)
        lungs = lung_fields(256, anatomy, shot)
        inside = np.zeros_like(lungs)
        for b in boxes:
            assert b.label == lesion and b.width >= 8 and b.height >= 8
            assert 0 <= b.x and b.x + b.width <= 256 and 0 <= b.y and b.y + b.height <= 256
            region = (slice(b.y, b.y + b.height), slice(b.x, b.x + b.width))
            assert lungs[region].mean() > 0.6, "box not on a lung field"
            assert img[region].mean() - clean[region].mean() > 0.02, "lesion does not brighten its box"
            inside[max(b.y - 4, 0) : b.y + b.height + 4, max(b.x - 4, 0) : b.x + b.width + 4] = True
        assert np.abs(img - clean)[~inside].max() < 0.03, "the lesion changed the image outside its boxes"
        if lesion == "covid":
            _assert_bilateral_peripheral(boxes, lungs)
            rows = np.flatnonzero(lungs.any(1))
            lower_zone += [b.y + b.height / 2 > (rows.min() + rows.max()) / 2 for b in boxes]
    if lesion == "covid":
        assert np.mean(lower_zone) > 0.5, "ground glass should favour the lower zones"


def _assert_bilateral_peripheral(boxes, lungs: np.ndarray) -> None:
    left, right = sorted(boxes, key=lambda b: b.x)
    assert left.x + left.width / 2 < 128 < right.x + right.width / 2, "not one box per lung"
    for b, outer in ((left, "min"), (right, "max")):
        cols = np.flatnonzero(lungs[b.y : b.y + b.height].any(0))
        cols = cols[cols < 128] if outer == "min" else cols[cols >= 128]
        gap = b.x - cols.min() if outer == "min" else cols.max() - (b.x + b.width - 1)
        assert gap < 15, f"covid patch {gap} px from the outer lung margin"


def test_lesion_barely_moves_global_statistics():
    """The lesion adds at most ~0.016 to the image mean (a lobar consolidation, 0.005 on
    average) while exposure varies it by ~0.066 (std): global statistics cannot tell the
    classes apart."""
    shift, spread = [], []
    for k in range(8):
        anatomy, shot = _case(k)
        clean, _ = render_chest(np.random.default_rng(k), size=256, anatomy=anatomy, shot=shot, lesion=None)
        spread.append(clean.mean())
        for lesion in ("pneumonia", "covid"):
            img, _ = render_chest(
                np.random.default_rng(k), size=256, anatomy=anatomy, shot=shot, lesion=lesion
            )
            shift.append(img.mean() - clean.mean())
    assert max(shift) < 0.02
    assert np.std(spread) > 2 * max(shift)


def test_render_rejects_unknown_lesion():
    anatomy, shot = _case(0)
    with pytest.raises(ValueError, match="valid: pneumonia, covid"):
        render_chest(np.random.default_rng(0), size=64, anatomy=anatomy, shot=shot, lesion="tb")


# --- the written dataset ----------------------------------------------------------------


def test_manifest_boxes_and_files_agree(small):
    manifest = _read_csv(small / "manifest.csv")
    assert list(manifest[0]) == ["path", "label", "split", "patient_id", "age", "sex", "view"]
    on_disk = {p.relative_to(small).as_posix() for p in small.rglob("*") if p.suffix in (".png", ".dcm")}
    assert {r["path"] for r in manifest} == on_disk
    for r in manifest:
        split, label, name = r["path"].split("/")
        assert (split, label) == (r["split"], r["label"])
        assert name.startswith(r["patient_id"] + "_") and label not in name
    boxes = _read_csv(small / "boxes.csv")
    assert list(boxes[0]) == ["path", "x", "y", "width", "height", "label"]
    per_path = Counter(b["path"] for b in boxes)
    for r in manifest:
        assert per_path[r["path"]] == {"normal": 0, "pneumonia": 1, "covid": 2}[r["label"]], r["path"]
    for b in boxes:
        assert b["label"] == next(r["label"] for r in manifest if r["path"] == b["path"])
        x, y, w, h = (int(b[k]) for k in ("x", "y", "width", "height"))
        assert 0 <= x < x + w <= 256 and 0 <= y < y + h <= 256
    info = demo_info(small)
    assert info is not None and info.n_images == len(manifest)
    assert info.classes == {c: sum(r["label"] == c for r in manifest) for c in CLASSES}
    assert "synthetic" in (small / "README.txt").read_text().lower()


def test_every_format_displays_the_rendered_image(small):
    """8/16-bit PNG and DICOM MONOCHROME1/2 with rescale + window all show the same picture."""
    plan = {i.path: i for i in plan_demo(0, SMALL)}
    kinds = Counter()
    for rel, item in plan.items():
        shown, kind = _display(small / rel)
        assert kind == item.fmt
        kinds[kind] += 1
        if kinds[kind] > 3:
            continue
        want, _ = render_chest(
            np.random.default_rng(list(item.seed)),
            size=256,
            anatomy=item.anatomy,
            shot=item.shot,
            lesion=None if item.label == "normal" else item.label,
        )
        assert np.abs(shown - want).max() < 1.5 / 255, rel
        if kind == "png16":
            assert shown.max() > 0.5 and (np.asarray(shown * 65535).max() > 4095)
    assert set(kinds) == {"png8", "png16", "dcm1", "dcm2"}, kinds


def test_dicom_headers_agree_with_the_manifest(small):
    import pydicom

    rows = {r["path"]: r for r in _read_csv(small / "manifest.csv")}
    dicoms = [p for p in rows if p.endswith(".dcm")]
    assert dicoms
    for rel in dicoms:
        ds = pydicom.dcmread(small / rel, stop_before_pixels=True)
        r = rows[rel]
        assert ds.PatientID == r["patient_id"]
        assert ds.Modality in ("DX", "CR") and ds.ViewPosition in ("AP", "PA")
        assert len(ds.PatientAge) == 4 and ds.PatientAge.endswith("Y")
        if r["age"]:
            assert int(ds.PatientAge[:3]) == int(r["age"])
        if r["sex"]:
            assert ds.PatientSex == r["sex"]
        if r["view"]:
            assert ds.ViewPosition == r["view"]


def test_same_seed_same_bytes_in_one_or_two_processes_other_seed_differs(small, tmp_path):
    write_demo(tmp_path / "again", seed=0, n_patients=SMALL, workers=2)
    assert _digest(tmp_path / "again") == _digest(small)
    write_demo(tmp_path / "other", seed=1, n_patients=4, workers=1)
    first = _read_csv(tmp_path / "other" / "manifest.csv")[0]["path"]
    same_name = small / first
    assert not same_name.exists() or same_name.read_bytes() != (tmp_path / "other" / first).read_bytes()


def test_refuses_a_folder_that_is_not_a_demo(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(ChestLabError, match="not empty"):
        write_demo(tmp_path, n_patients=2)
    assert (tmp_path / "mine.txt").read_text() == "keep me"
    assert not (tmp_path / MARKER).exists()


def test_overwrites_a_previous_demo_and_recovers_an_interrupted_one(tmp_path):
    root = tmp_path / "d"
    write_demo(root, seed=1, n_patients=6, workers=1)

    def interrupt(done, total, message=""):
        if done >= 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_demo(root, seed=2, n_patients=6, workers=1, progress=interrupt)
    assert demo_info(root) is None, "an interrupted demo must not look complete"
    assert json.loads((root / MARKER).read_text())["status"] == "writing"
    info = write_demo(root, seed=2, n_patients=3, workers=1)
    assert demo_info(root) == info
    manifest = _read_csv(root / "manifest.csv")
    assert {r["path"] for r in manifest} == {
        p.relative_to(root).as_posix() for p in root.rglob("*") if p.suffix in (".png", ".dcm")
    }


def test_cli_prints_the_json_contract(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "DEFAULT_IMAGES", 8)
    assert main(["demo", str(tmp_path / "d"), "--seed", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"root", "n_images", "classes"}
    assert out["n_images"] >= 8 and sum(out["classes"].values()) == out["n_images"]
    assert Path(out["root"]) == (tmp_path / "d").resolve()
    assert len(_read_csv(tmp_path / "d" / "manifest.csv")) == out["n_images"]


def test_cli_error_is_one_line(tmp_path, capsys):
    (tmp_path / "x.txt").write_text("")
    assert main(["demo", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and str(tmp_path) in err


@pytest.mark.slow
def test_full_demo_is_fast_and_has_no_global_class_signal(tmp_path):
    import resource  # POSIX only; this test is too

    # CPU seconds of this process and its worker, not wall time: other jobs on a shared
    # machine stretch the wall clock, while < 60 CPU-s means < 60 s even on one free core.
    before = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    info = write_demo(tmp_path / "full", seed=0)
    after = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    cpu = sum(a.ru_utime + a.ru_stime - b.ru_utime - b.ru_stime for a, b in zip(after, before, strict=True))
    assert cpu < 60, f"full demo took {cpu:.0f} CPU seconds"
    assert info.n_images >= 900
    stats: dict[str, list[tuple[float, float]]] = {c: [] for c in CLASSES}
    for r in _read_csv(tmp_path / "full" / "manifest.csv"):
        img, _ = _display(tmp_path / "full" / r["path"])
        stats[r["label"]].append((img.mean(), img.std()))
    means = {c: np.mean(v, axis=0) for c, v in stats.items()}
    for c in CLASSES:
        assert abs(means[c][0] - means["normal"][0]) < 0.01, means
        assert abs(means[c][1] - means["normal"][1]) < 0.01, means
