"""The Explore page's numbers: column typing, distributions, missing values, the task
builder's preview, the grouped split, boxes, intensity statistics, thumbnails."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core import explore as ex
from core.data.tasks import RowFilter, SplitPolicy, Task, apply_task, class_balance
from core.plots import explore as figs


def _index(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    for col in ("path", "label", "split", "patient_id"):
        if col not in df:
            df[col] = ""
    if df["path"].eq("").all():
        df["path"] = [f"/data/{i}.png" for i in range(len(df))]
    return df


# ---------------------------------------------------------------- column typing


def test_mostly_numbers_is_numeric_and_keeps_free_text_visible():
    ages = [str(a) for a in range(20, 80)] + ["50+", "50+", ""]
    df = _index([{"label": "a" if i % 2 else "b", "age": a} for i, a in enumerate(ages)])
    info = ex.column_info(df["age"])
    assert info.kind == "numeric"
    assert info.n_not_numbers == 2
    dist = ex.distribution(df, "age")
    assert dist.kind == "histogram"
    assert dist.not_numbers == {"50+": 2}
    assert dist.n_missing == 1
    assert dist.table["count"].sum() == 60  # the numbers, binned; "50+" reported beside them


def test_text_that_is_not_mostly_numbers_is_shown_as_written():
    df = _index([{"label": "a", "sex": v} for v in ["M", "M ", "F", "F", "M", "50+", "M "]])
    info = ex.column_info(df["sex"])
    assert info.kind == "categorical"
    dist = ex.distribution(df, "sex")
    counts = dist.table.groupby("value")["count"].sum().to_dict()
    # "M " is not silently merged with "M": it is a value of its own, quoted to show the space.
    assert counts == {"M": 2, '"M "': 2, "F": 2, "50+": 1}


def test_numeric_column_with_few_values_is_drawn_as_bars_in_numeric_order():
    df = _index([{"label": "a", "target": t} for t in [1, 0, 0, 10, 2, 1]])
    dist = ex.distribution(df, "target")
    assert dist.kind == "bars"
    assert dist.values == ["0", "1", "2", "10"]


def test_top_n_keeps_the_most_frequent_values_and_groups_the_rest_as_other():
    values = [f"v{i}" for i in range(10) for _ in range(10 - i)]  # v0 x10, v1 x9, ... v9 x1
    df = _index([{"label": "a", "site": v} for v in values])
    dist = ex.distribution(df, "site", top_n=3)
    assert dist.values == ["v0", "v1", "v2", "other"]
    counts = dist.table.set_index("value")["count"]
    assert counts["other"] == sum(range(1, 8))
    assert counts.sum() == len(values)


def test_missing_values_count_blanks_and_whitespace():
    df = _index([
        {"label": "a", "sex": "M", "age": 50.0},
        {"label": "a", "sex": "", "age": np.nan},
        {"label": "b", "sex": "   ", "age": 40.0},
        {"label": "b", "sex": None, "age": 30.0},
    ])  # fmt: skip
    missing = ex.missing_values(df).set_index("column")
    assert missing.loc["sex", "missing"] == 3
    assert missing.loc["age", "missing"] == 1
    assert missing.loc["sex", "percent"] == 75.0
    assert "path" not in missing.index


def test_default_columns_match_names_case_insensitively():
    df = _index([{"label": "a", "PatientSex": "M", "Patient_Age": "50", "Gender": "", "ViewPosition": "PA",
                  "MODALITY": "CR", "finding": "x"}])  # fmt: skip
    assert ex.default_columns(df) == ["Patient_Age", "PatientSex", "ViewPosition", "MODALITY"]


def test_summary_and_class_balance():
    df = _index(
        [{"label": "normal", "split": "train", "patient_id": "p1"}] * 6
        + [{"label": "covid", "split": "train", "patient_id": "p2"}] * 2
        + [{"label": "covid", "split": "val", "patient_id": "p3"}]
        + [{"label": "normal", "split": "", "patient_id": ""}]
    )
    s = ex.summarize(df)
    assert (s.n_images, s.n_classes, s.n_patients) == (10, 2, 3)
    assert s.images_per_patient == 3.0 and s.max_images_per_patient == 6
    assert s.imbalance_ratio == pytest.approx(7 / 3, abs=0.01)
    assert s.splits == {"train": 8, "val": 1, "unsplit": 1}
    long = ex.class_counts(df)
    train = long[long["split"] == "train"].set_index("class")
    assert train.loc["normal", "count"] == 6 and train.loc["normal", "percent"] == 75.0
    assert long.groupby("split")["percent"].sum().round().eq(100).all()
    table = ex.class_table(long)
    assert table.loc["covid", "total"] == 3
    assert figs.class_balance_figure(long, percent=True).data  # a bar per class


def test_crosstab_counts_every_row_once():
    rng = np.random.default_rng(0)
    df = _index([{"label": rng.choice(["a", "b"]), "age": float(rng.integers(1, 90)), "sex": rng.choice(["M", "F", ""])}
                 for _ in range(200)])  # fmt: skip
    table = ex.crosstab(df, "age", "sex")
    assert int(table.to_numpy().sum()) == 200
    assert "(missing)" in table.columns


# ---------------------------------------------------------------- task builder


def _patients(n_rows: int = 1000, seed: int = 0) -> pd.DataFrame:
    """1-4 images per patient, one class per patient (60/30/10), ages and sexes."""
    rng = np.random.default_rng(seed)
    rows, p = [], 0
    while len(rows) < n_rows:
        label = rng.choice(["Normal", "Pneumonia", "COVID-19"], p=[0.6, 0.3, 0.1])
        age, sex = int(rng.integers(18, 90)), rng.choice(["M", "F"])
        for k in range(int(rng.integers(1, 5))):
            rows.append({"path": f"/d/p{p}_{k}.png", "label": label, "split": "", "patient_id": f"p{p}", "age": float(age),
                         "sex": sex})  # fmt: skip
        p += 1
    return pd.DataFrame(rows[:n_rows])


def test_merge_changes_the_counts():
    df = _patients()
    plain = ex.task_preview(df, Task(split=SplitPolicy("grouped")))
    merged = ex.task_preview(df, Task(merge={"COVID-19": "pneumonia-related", "Pneumonia": "pneumonia-related"},
                                      split=SplitPolicy("grouped")))  # fmt: skip
    assert plain.error is None and merged.error is None
    assert set(merged.table.index) == {"Normal", "pneumonia-related"}
    expected = plain.table.loc["COVID-19", "total"] + plain.table.loc["Pneumonia", "total"]
    assert merged.table.loc["pneumonia-related", "total"] == expected
    assert merged.n_rows == plain.n_rows == len(df)


def test_drop_and_filters_leave_rows_out():
    df = _patients()
    dropped = ex.task_preview(df, Task(drop_values=("COVID-19",), split=SplitPolicy("grouped")))
    assert "COVID-19" not in dropped.table.index
    assert dropped.n_dropped == int((df["label"] == "COVID-19").sum())
    old_men = Task(
        filters=(RowFilter("age", ">", "60"), RowFilter("sex", "==", "M")), split=SplitPolicy("grouped")
    )
    kept = ex.task_preview(df, old_men)
    assert kept.n_rows == int(((df["age"] > 60) & (df["sex"] == "M")).sum())
    # A float column matches the number as typed: "50" finds 50.0.
    assert RowFilter("age", "==", "50").mask(df).sum() == (df["age"] == 50).sum() > 0


def test_a_task_that_cannot_be_trained_says_why():
    df = _patients(50)
    preview = ex.task_preview(df, Task(split=SplitPolicy("keep")))
    assert preview.error and "no train/val/test split" in preview.error


def test_grouped_split_keeps_patients_together_and_class_shares_close():
    df = _patients(1000)
    out = apply_task(df, Task(split=SplitPolicy("grouped", (0.7, 0.15, 0.15), seed=3)))
    assert out.groupby("patient_id")["split"].nunique().max() == 1
    whole = out["class_name"].value_counts(normalize=True)
    for split, part in out.groupby("split"):
        shares = part["class_name"].value_counts(normalize=True).reindex(whole.index, fill_value=0)
        assert (shares - whole).abs().max() < 0.05, (split, shares.to_dict(), whole.to_dict())
    sizes = out["split"].value_counts(normalize=True)
    assert abs(sizes["train"] - 0.7) < 0.05
    assert class_balance(out).to_numpy().sum() == 1000


def test_grouped_split_is_fast_on_an_rsna_sized_index():
    import time

    rng = np.random.default_rng(0)
    n = 30_000
    df = pd.DataFrame({"path": [f"/d/{i}" for i in range(n)], "label": rng.choice(["a", "b", "c"], n), "split": "",
                       "patient_id": [f"p{i}" for i in rng.integers(0, 26_000, n)]})  # fmt: skip
    start = time.perf_counter()
    apply_task(df, Task(split=SplitPolicy("grouped")))
    assert time.perf_counter() - start < 2.0  # was 6.5 s before the vectorised grouping


# ---------------------------------------------------------------- gallery, boxes


def test_filter_and_pages():
    df = _index([{"label": "a" if i % 3 else "b", "split": "train" if i % 2 else "val", "view": "PA" if i < 5 else "AP "}
                 for i in range(50)])  # fmt: skip
    rows = ex.filter_index(df, classes=["a"], splits=["train"], column="view", values=['"AP "'])
    assert len(rows) and (rows["label"] == "a").all() and (rows["view"] == "AP ").all()
    assert ex.n_pages(len(df), 24) == 3
    assert len(ex.page_of(df, 3, 24)) == 2
    assert ex.column_values(df, "view") == ['"AP "', "PA"]


def test_box_statistics_are_normalised_to_the_image():
    df = _index([{"path": "/d/a.png", "label": "pneumonia", "file_width": 200, "file_height": 100},
                 {"path": "/d/b.png", "label": "covid", "file_width": None, "file_height": None}])  # fmt: skip
    boxes = pd.DataFrame({"path": ["/d/a.png", "/d/b.png"], "x": [50.0, 1.0], "y": [25.0, 1.0], "width": [100.0, 5.0],
                          "height": [50.0, 5.0], "label": ["", ""]})  # fmt: skip
    stats = ex.box_stats(boxes, df, bins=10)
    assert stats.n_boxes == 2 and stats.n_without_size == 1
    row = stats.boxes.iloc[0]
    assert (row["cx"], row["cy"], row["w"], row["h"], row["class"]) == (0.5, 0.5, 0.5, 0.5, "pneumonia")
    assert stats.centres.sum() == 1 and stats.centres[5, 5] == 1
    table = ex.box_size_table(stats)
    assert table["count"].sum() == 1


def test_image_with_boxes_draws_in_the_box(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(np.zeros((100, 200), np.uint8)).save(path)
    boxes = pd.DataFrame(
        {"path": [str(path)], "x": [50.0], "y": [20.0], "width": [100.0], "height": [60.0], "label": ["x"]}
    )
    img = ex.image_with_boxes(str(path), boxes, longest=100)
    assert img.shape == (50, 100, 3)
    assert img[10, 25:75].max() > 0  # the top edge of the box, scaled by one half
    assert img[25, 50].max() == 0  # inside the box: untouched


# ---------------------------------------------------------------- intensity, thumbnails


def _gray_images(folder, n: int) -> list[str]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        p = folder / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(p)
        out.append(str(p))
    return out


def test_intensity_statistics_match_numpy_and_are_cached(tmp_path, workspace, monkeypatch):
    paths = _gray_images(tmp_path, 6)
    groups = ["a", "a", "a", "b", "b", "b"]
    stats = ex.intensity_stats(paths, groups, size=32)
    pixels = np.stack([np.asarray(Image.open(p), dtype=np.float64) / 255 for p in paths])
    assert stats.mean == pytest.approx(pixels.mean(), abs=1e-4)
    assert stats.std == pytest.approx(pixels.std(), abs=1e-4)
    assert stats.n_images == 6 and stats.classes == ["a", "b"]
    assert np.sum(stats.histogram[0]) == pytest.approx(1.0, abs=1e-3)

    def no_decoding(*args, **kwargs):
        raise AssertionError("a cached result must not read images")

    monkeypatch.setattr("core.data.images.read_gray", no_decoding)
    assert ex.intensity_stats(paths, groups, size=32).mean == stats.mean


def test_thumbnails_are_cached_and_follow_edits(tmp_path, workspace, monkeypatch):
    from core.data import thumbs

    path = _gray_images(tmp_path, 1)[0]
    first = thumbs.thumbnail(path, 16)
    assert first.data and Image.open(__import__("io").BytesIO(first.data)).size == (16, 16)
    calls = []
    real = thumbs.make_thumbnail
    monkeypatch.setattr(thumbs, "make_thumbnail", lambda p, s: calls.append(p) or real(p, s))
    assert thumbs.thumbnail(path, 16).data == first.data and not calls
    Image.fromarray(np.full((32, 32), 255, np.uint8)).save(path)
    os.utime(path, ns=(1, 1))
    assert thumbs.thumbnail(path, 16).data != first.data and calls == [path]
    (tmp_path / "bad.png").write_text("not an image")
    bad = thumbs.thumbnails([str(tmp_path / "bad.png"), path], 16)
    assert bad[0].data is None and "not an image" in bad[0].error and bad[1].data
