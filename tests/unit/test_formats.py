"""Every dataset format read into the one index table, on data generated here and on the
real samples in ../shared/data; every kind of bad input a scan must survive."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core.data.dicomwrite import write_dicom
from core.data.formats import list_formats
from core.data.index import FILE_COLUMNS, INDEX_COLUMNS, detect_format, scan
from core.errors import ChestLabError, ConfigError, DataError

pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR AS")  # bare ages, as RSNA writes them


@pytest.fixture(autouse=True)
def _workspace(workspace):
    """Every scan caches into a fresh temporary workspace."""
    return workspace


# ---------------------------------------------------------------- writing test data


def png(path: Path, value: int = 120, size: tuple[int, int] = (24, 20), mode: str = "L") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value,) * len(mode)).save(path, format="PNG")
    return path


def jpeg(path: Path, value: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(path, format="JPEG")
    return path


def dcm(path: Path, *, patient: str = "P1", age: str = "045Y", preamble: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.arange(16 * 16, dtype=np.uint16).reshape(16, 16) * 16
    header = {"PatientID": patient, "PatientAge": age, "PatientSex": "F", "ViewPosition": "PA"}
    write_dicom(path, pixels, bits_stored=12, header=header, preamble=preamble)
    return path


def write_bad_files(folder: Path) -> dict[str, Path]:
    """A truncated JPEG, a text file named .png, an empty file and a garbage .dcm."""
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(buf, "JPEG")
    bad = {
        "truncated": folder / "truncated.jpg",
        "text": folder / "notes.png",
        "empty": folder / "empty.png",
        "garbage": folder / "garbage.dcm",
    }
    bad["truncated"].write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    bad["text"].write_text("this is not an image\n" * 20)
    bad["empty"].write_bytes(b"")
    bad["garbage"].write_bytes(os.urandom(3000))
    return bad


def skipped_reasons(report) -> dict[str, str]:
    return {s.path: s.reason for s in report.skipped}


# ---------------------------------------------------------------- imagefolder


def test_imagefolder_class_folders_without_splits(tmp_path):
    root = tmp_path / "covid-ct"
    for i in range(3):
        png(root / "CT_COVID" / f"p6-52%{i}.png")  # '%' in names, as in COVID-CT
    for i in range(2):
        jpeg(root / "CT_NonCOVID" / f"{i}.jpg")
    (root / "CT_Empty").mkdir()
    (root / "Data-split").mkdir()
    (root / "Data-split" / "trainCT_COVID.txt").write_text("p6-52%0.png\n")
    (root / "COVID-CT-MetaInfo.csv").write_text("File name,Patient ID\np6-52%0.png,Patient 1\n")
    (root / "README.md").write_text("# readme\n")

    assert detect_format(root) == "imagefolder"
    report = scan(root)
    assert report.format == "imagefolder"
    assert report.classes == {"CT_COVID": 3, "CT_NonCOVID": 2}  # the empty folder is no class
    assert report.splits == {}
    assert report.skipped == []
    assert set(report.index["split"]) == {""} and set(report.index["patient_id"]) == {""}
    assert list(report.index.columns[:4]) == list(INDEX_COLUMNS)
    assert list(report.index.columns[-len(FILE_COLUMNS) :]) == list(FILE_COLUMNS)
    assert all(os.path.isabs(p) and os.path.isfile(p) for p in report.index["path"])
    row = report.index.set_index("label").loc["CT_NonCOVID"].iloc[0]
    assert (row["file_format"], row["file_width"], row["file_height"]) == ("JPEG", 32, 32)


@pytest.mark.parametrize(
    ("prefix", "split_names"),
    [
        ("", ("train", "val", "test")),  # split/class right under the root
        ("input", ("train", "val", "test")),  # DRENet: input/{train,val,test}/{nCoV,no_nCoV}
        ("a/b/chest_xray", ("TRAIN", "Validation", "Test")),  # deeper, odd case
        ("data", ("training", "valid", "testing")),
    ],
)
def test_imagefolder_split_folders_at_any_depth(tmp_path, prefix, split_names):
    root = tmp_path / "ds"
    counts = {"train": 3, "val": 2, "test": 1}
    for split, name in zip(("train", "val", "test"), split_names, strict=True):
        for cls in ("nCoV", "no_nCoV"):
            for i in range(counts[split]):
                png(root / prefix / name / cls / f"{i}.png", value=10 * i)
    report = scan(root, "auto")
    assert report.format == "imagefolder"
    assert report.classes == {"nCoV": 6, "no_nCoV": 6}
    assert report.splits == {s: {"nCoV": n, "no_nCoV": n} for s, n in counts.items()}
    assert list(report.splits) == ["train", "val", "test"]


def test_imagefolder_skips_the_four_bad_files_and_counts_the_good(tmp_path):
    root = tmp_path / "ds"
    for i in range(3):
        png(root / "normal" / f"{i}.png")
        jpeg(root / "covid" / f"{i}.jpg")
    bad = write_bad_files(root / "covid")
    report = scan(root)
    assert report.classes == {"covid": 3, "normal": 3}
    reasons = skipped_reasons(report)
    assert set(reasons) == {str(p) for p in bad.values()}
    assert "truncated" in reasons[str(bad["truncated"])]
    assert "not an image" in reasons[str(bad["text"])]
    assert "empty" in reasons[str(bad["empty"])]
    assert "DICOM" in reasons[str(bad["garbage"])]


def test_imagefolder_images_outside_class_folders_are_skipped_with_a_reason(tmp_path):
    root = tmp_path / "ds"
    png(root / "a" / "1.png")
    png(root / "b" / "1.png")
    png(root / "loose.png")
    png(root / "train" / "2.png")  # a split folder with no class folder below it
    report = scan(root)
    assert report.classes == {"a": 1, "b": 1}
    reasons = skipped_reasons(report)
    assert "not in a class folder" in reasons[str(root / "loose.png")]
    assert "split folder" in reasons[str(root / "train" / "2.png")]


def test_single_class_dataset_scans_with_a_warning(tmp_path):
    root = tmp_path / "ds"
    for i in range(3):
        png(root / "NORMAL" / f"{i}.png")
    report = scan(root)
    assert report.to_json()["classes"] == {"NORMAL": 3}
    assert any("one class" in w for w in report.warnings)


def test_a_folder_with_only_bad_images_is_one_data_error(tmp_path):
    root = tmp_path / "ds"
    write_bad_files(root / "covid")
    with pytest.raises(DataError, match="no usable images"):
        scan(root, "imagefolder")


# ---------------------------------------------------------------- csv manifest


@pytest.mark.parametrize("sep", [",", ";", "\t"])
@pytest.mark.parametrize("absolute", [False, True])
def test_csv_manifest_delimiters_and_paths(tmp_path, sep, absolute):
    root = tmp_path / "ds"
    files = [png(root / "img" / f"{i}.png") for i in range(4)]
    names = [str(f) if absolute else f"img/{f.name}" for f in files]
    lines = [sep.join(["path", "label", "split", "patient_id", "age", "sex"])]
    rows = [
        ("covid ", "TRAIN", "007", "45", "F "),
        ("normal", "valid", "007", "?", "M"),
        ("normal", "Test", "12", "70", ""),
        ("covid", "", "13", "33", "F"),
    ]
    lines += [sep.join([n, *r]) for n, r in zip(names, rows, strict=True)]
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")

    assert detect_format(root) == "csv"
    report = scan(root)
    assert report.format == "csv"
    assert report.classes == {"covid": 2, "normal": 2}
    assert report.splits == {"train": {"covid": 1}, "val": {"normal": 1}, "test": {"normal": 1}}
    idx = report.index.set_index("path")
    assert idx.loc[str(files[0]), "patient_id"] == "007"  # ids stay text, leading zeros kept
    assert idx.loc[str(files[3]), "split"] == ""
    assert report.metadata_columns == ["age", "sex"]
    assert idx.loc[str(files[0]), "sex"] == "F"  # trailing space stripped
    assert pd.isna(idx.loc[str(files[1]), "age"]) and idx.loc[str(files[2]), "age"] == 70


def test_csv_manifest_skips_missing_duplicate_and_non_image_rows(tmp_path):
    root = tmp_path / "ds"
    png(root / "a.png")
    png(root / "b.png")
    (root / "notes.txt").write_text("x")
    (root / "list.csv").write_text(
        "path,label\na.png,x\nb.png,y\nmissing.png,x\na.png,y\nnotes.txt,x\nb.png,\n"
    )
    report = scan(root / "list.csv")
    assert report.classes == {"x": 1, "y": 1}
    reasons = [s.reason for s in report.skipped]
    assert len(reasons) == 4
    assert any("file not found (row 3" in r for r in reasons)
    assert any("row 4 of list.csv names the same file as row 1" in r for r in reasons)
    assert any("not a 2-D image file (.txt" in r for r in reasons)
    assert any("empty label" in r for r in reasons)


def test_csv_manifest_many_missing_files_are_one_summary_entry(tmp_path):
    root = tmp_path / "ds"
    png(root / "a.png")
    png(root / "b.png")
    rows = ["a.png,x", "b.png,y"] + [f"gone/{i}.png,x" for i in range(500)]
    (root / "m.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    report = scan(root)
    assert len(report.skipped) == 1
    assert report.skipped[0].path == str(root / "m.csv")
    assert report.skipped[0].reason.startswith("500 rows of m.csv name files that do not exist (first: ")


def test_csv_manifest_named_columns_and_boxes(tmp_path):
    root = tmp_path / "ds"
    for i in range(3):
        png(root / "images" / f"{i}.png", size=(100, 100))
    (root / "meta.csv").write_text(
        "file;diagnosis;fold;subject;view\nimages/0.png;covid;train;s1;AP\nimages/1.png;normal;test;s2;PA\nimages/2.png;covid;test;s3;PA\n"
    )
    (root / "boxes.csv").write_text(
        "path,x,y,width,height\nimages/0.png,10,20,30,40\nimages/0.png,50,50,10,10\nimages/9.png,1,1,1,1\n"
    )
    options = {
        "path_column": "file",
        "label_column": "diagnosis",
        "split_column": "fold",
        "patient_column": "subject",
    }
    assert detect_format(root, options) == "csv"
    report = scan(root, "csv", options=options)
    assert report.classes == {"covid": 2, "normal": 1}
    assert report.splits["test"] == {"covid": 1, "normal": 1}
    assert sorted(report.index["patient_id"]) == ["s1", "s2", "s3"]
    assert report.metadata_columns == ["view"]
    boxes = report.boxes
    assert len(boxes) == 2  # the box of an image not in the index is dropped
    assert set(boxes["path"]) == {str(root / "images" / "0.png")}
    assert set(boxes["label"]) == {"covid"}  # boxes without labels take their image's label
    assert boxes.iloc[0][["x", "y", "width", "height"]].tolist() == [10, 20, 30, 40]
    assert report.to_json()["n_boxes"] == 2


def test_csv_missing_path_column_is_one_error_naming_the_csv_and_column(tmp_path):
    root = tmp_path / "ds"
    png(root / "a.png")
    csv = root / "labels.csv"
    csv.write_text("filename,label\na.png,x\n")
    with pytest.raises(DataError) as err:
        scan(csv, "csv")
    msg = str(err.value)
    assert str(csv) in msg and "'path'" in msg and "filename" in msg and "\n" not in msg
    with pytest.raises(DataError, match="labels.csv.*'path'"):
        scan(root, "csv")  # the only CSV in the folder
    assert len(scan(csv, "csv", options={"path_column": "filename"}).index) == 1


def test_unreadable_csv_is_one_data_error(tmp_path):
    csv = tmp_path / "m.csv"
    csv.write_bytes(b'path,label\n"a.png,x\n' + b"\x00\xff" * 10)
    with pytest.raises(DataError, match="m.csv"):
        scan(csv, "csv")


def test_csv_manifest_in_latin1_with_dicom_rows(tmp_path):
    root = tmp_path / "ds"
    png(root / "a.png")
    dcm(root / "b.dcm", patient="from-header", age="070Y")
    (root / "m.csv").write_bytes(
        "path;label;patient_id\na.png;Pneumonie é;p1\nb.dcm;Normal;\n".encode("cp1252")
    )
    report = scan(root)
    assert report.classes == {"Normal": 1, "Pneumonie é": 1}
    idx = report.index.set_index("label")
    assert idx.loc["Normal", "patient_id"] == "from-header"  # a blank patient takes the DICOM PatientID
    assert idx.loc["Normal", "PatientAge"] == 70 and pd.isna(idx.loc["Pneumonie é", "PatientAge"])
    assert idx.loc["Normal", "file_format"] == "DICOM"


# ---------------------------------------------------------------- coronahack


def _coronahack(root: Path, with_images: bool = True) -> Path:
    base = root / "Coronahack-Chest-XRay-Dataset" / "Coronahack-Chest-XRay-Dataset"
    rows = [
        (0, "IM-0128-0001.jpeg", "Normal", "TRAIN", "", ""),
        (1341, "person101_virus_188.jpeg", "Pnemonia", "TRAIN", "", "Virus"),
        (5221, "kjr-21-e25-g001-l-a.jpg", "Pnemonia", "TRAIN", "COVID-19", "Virus"),
        (5300, "IM-0001-0001.jpeg", "Normal", "TEST", "", ""),
        (5301, "person1_bacteria_1.jpeg", "Pnemonia", "TEST", "", "bacteria"),
        (5302, "not-downloaded.jpeg", "Normal", "TEST", "", ""),
    ]
    header = ",X_ray_image_name,Label,Dataset_type,Label_2_Virus_category,Label_1_Virus_category"
    root.mkdir(parents=True, exist_ok=True)
    (root / "Chest_xray_Corona_Metadata.csv").write_text(
        header + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n"
    )
    (root / "Chest_xray_Corona_dataset_Summary.csv").write_text(
        ",Label,Label_1_Virus_category,Label_2_Virus_category,Image_Count\n"
    )
    if with_images:
        for _, name, _, split, *_ in rows[:-1]:
            jpeg(base / split.lower() / name)
    return root


def test_coronahack_nested_kaggle_folders(tmp_path):
    root = _coronahack(tmp_path / "coronahack")
    extra = jpeg(next(root.rglob("train")) / "unlisted.jpeg")
    assert detect_format(root) == "coronahack"
    report = scan(root)
    assert report.classes == {"Normal": 2, "Pnemonia": 3}  # the typo is kept as written
    assert report.splits == {"train": {"Normal": 1, "Pnemonia": 2}, "test": {"Normal": 1, "Pnemonia": 1}}
    assert report.metadata_columns == ["Label_2_Virus_category", "Label_1_Virus_category"]
    covid = report.index[report.index["Label_2_Virus_category"] == "COVID-19"]
    assert covid["path"].str.endswith("train/kjr-21-e25-g001-l-a.jpg").all() and len(covid) == 1
    assert [(s.path, s.reason) for s in report.skipped] == [
        (
            str(extra.parent.parent / "test" / "not-downloaded.jpeg"),
            "file not found (row 6 of Chest_xray_Corona_Metadata.csv)",
        ),
        (str(extra), "no row in Chest_xray_Corona_Metadata.csv"),  # on disk but unlabelled
    ]


def test_coronahack_csv_without_images_is_a_clear_error(tmp_path):
    root = _coronahack(tmp_path / "coronahack", with_images=False)
    with pytest.raises(DataError, match="no train/ or test/ image folder"):
        scan(root)


# ---------------------------------------------------------------- cohen


def _cohen(root: Path) -> Path:
    header = "patientid,offset,sex,age,finding,view,modality,folder,filename,clinical_notes,"
    rows = [
        '19,13,F,55,COVID-19,AP,X-ray,images,a.jpg,"Case 1, day 3",',
        "19,27,F,55,COVID-19,Axial,CT,images,b.png,,",
        "285,,M,,SARS ,PA,X-ray,images,shared.jpg,,",
        "339,,M,,SARS,PA,X-ray,images,shared.jpg,,",
        "5,?,,,todo,PA,X-ray,images,c.jpg,,",
        "7,,,,COVID-19,Axial,CT,volumes,coronacases_org_004.nii.gz,,",
        "8,,,,Pneumonia/Viral/COVID-19,PA,X-ray,images,gone.jpg,,",
    ]
    root.mkdir(parents=True, exist_ok=True)
    (root / "metadata.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    jpeg(root / "images" / "a.jpg")
    png(root / "images" / "b.png", mode="RGBA")
    png(root / "images" / "shared.jpg")  # a PNG named .jpg, as 15 files of the collection
    jpeg(root / "images" / "c.jpg")
    return root


def test_cohen_collection(tmp_path):
    root = _cohen(tmp_path / "covid-chestxray-dataset")
    assert detect_format(root) == "cohen"
    report = scan(root)
    assert report.classes == {"COVID-19": 2, "SARS": 1, "todo": 1}
    assert len(report.index) == len(list((root / "images").iterdir()))  # one row per file on disk
    jpeg(root / "images" / "not-in-metadata.jpg")
    assert (
        skipped_reasons(scan(root))[str(root / "images" / "not-in-metadata.jpg")] == "no row in metadata.csv"
    )
    shared = report.index[report.index["path"].str.endswith("shared.jpg")].iloc[0]
    assert (shared["patient_id"], shared["file_format"]) == ("285", "PNG")  # the first of the two rows
    reasons = " | ".join(s.reason for s in report.skipped)
    assert "row 4 of metadata.csv names the same file as row 3" in reasons
    assert "not a 2-D image file (.nii.gz" in reasons
    assert "file not found (row 7" in reasons
    assert len(report.skipped) == 3
    assert "patientid" not in report.metadata_columns and not any(
        c.startswith("Unnamed") for c in report.metadata_columns
    )
    assert {"offset", "sex", "age", "view", "modality", "clinical_notes"} <= set(report.metadata_columns)
    assert report.index["offset"].dtype.kind == "f"  # '?' is a missing number, not text


# ---------------------------------------------------------------- rsna


def _rsna(root: Path, n_missing: int = 25) -> Path:
    images = root / "stage_2_train_images"
    dcm(images / "pos.dcm", patient="pos", age="68")
    dcm(images / "neg.dcm", patient="neg", age="005Y")
    dcm(images / "unlabelled.dcm", patient="unlabelled")
    lines = [
        "patientId,x,y,width,height,Target",
        "pos,264.0,152.0,213.0,379.0,1",
        "pos,562.0,152.0,256.0,453.0,1",
        "neg,,,,,0",
    ]
    lines += [f"missing-{i},,,,,0" for i in range(n_missing)]
    (root / "stage_2_train_labels.csv").write_text("\n".join(lines) + "\n")
    info = ["patientId,class", "pos,Lung Opacity", "pos,Lung Opacity", "neg,No Lung Opacity / Not Normal"]
    (root / "stage_2_detailed_class_info.csv").write_text("\n".join(info) + "\n")
    return root


def test_rsna_labels_boxes_class_info_and_headers(tmp_path):
    root = _rsna(tmp_path / "rsna")
    assert detect_format(root) == "rsna"
    report = scan(root)
    assert report.classes == {"Lung Opacity": 1, "No Lung Opacity": 1}
    idx = report.index.set_index("patient_id")
    assert (
        idx.loc["pos", "class"] == "Lung Opacity"
        and idx.loc["neg", "class"] == "No Lung Opacity / Not Normal"
    )
    assert idx.loc["pos", "Target"] == 1 and idx.loc["neg", "Target"] == 0
    assert idx.loc["pos", "PatientAge"] == 68 and idx.loc["neg", "PatientAge"] == 5
    assert {"PatientSex", "ViewPosition", "Modality", "Rows", "PhotometricInterpretation"} <= set(
        report.metadata_columns
    )
    assert idx.loc["pos", "file_format"] == "DICOM"
    assert len(report.boxes) == 2 and set(report.boxes["path"]) == {idx.loc["pos", "path"]}
    assert report.boxes["width"].tolist() == [213.0, 256.0]
    summary = [s for s in report.skipped if s.path.endswith("stage_2_train_labels.csv")]
    assert len(summary) == 1 and summary[0].reason.startswith(
        "25 patients in stage_2_train_labels.csv have no DICOM"
    )
    assert any(s.path.endswith("unlabelled.dcm") for s in report.skipped)


# ---------------------------------------------------------------- dicom


def test_dicom_folder_nested_extensionless_and_no_preamble(tmp_path):
    root = tmp_path / "dicoms"
    dcm(root / "covid" / "study1" / "1.2.840.113619.2.55.3.604688119", patient="A")  # UID name, no extension
    dcm(root / "covid" / "IM0002", patient="B", preamble=False)
    dcm(root / "normal" / "x.dcm", patient="C", age="62")
    (root / "normal" / "broken.dcm").write_bytes(os.urandom(2000))
    (root / "normal" / "LICENSE").write_text("MIT\n")
    (root / "_header_summary.csv").write_text("file,Modality\nx.dcm,DX\n")
    assert detect_format(root) == "dicom"
    report = scan(root)
    assert report.classes == {"covid": 1, "normal": 1, "study1": 1}  # label = parent folder name
    idx = report.index.set_index("patient_id")
    assert sorted(idx.index) == ["A", "B", "C"]  # patient = PatientID
    assert idx.loc["C", "PatientAge"] == 62 and idx.loc["A", "PatientAge"] == 45
    assert idx.loc["B", "ViewPosition"] == "PA" and idx.loc["B", "BitsStored"] == 12
    assert [Path(s.path).name for s in report.skipped] == ["broken.dcm"]


@pytest.mark.parametrize("key", ["filename", "PatientID", "path"])
def test_dicom_labels_from_a_csv(tmp_path, key):
    root = tmp_path / "dicoms"
    files = {p: dcm(root / "all" / f"{p}.dcm", patient=p) for p in ("A", "B", "C")}
    values = {
        "filename": lambda p: f"{p}.dcm",
        "PatientID": lambda p: p,
        "path": lambda p: f"dicoms/all/{p}.dcm",
    }[key]
    labels = tmp_path / "labels.csv"
    labels.write_text(f"{key},label,split,site\n{values('A')},covid,train,s1\n{values('B')},normal,test,s2\n")
    report = scan(root, "dicom", options={"labels": labels})
    assert report.classes == {"covid": 1, "normal": 1}
    assert report.splits == {"train": {"covid": 1}, "test": {"normal": 1}}
    assert "site" in report.metadata_columns
    assert [s.path for s in report.skipped] == [str(files["C"])]
    assert "no row for" in report.skipped[0].reason and "labels.csv" in report.skipped[0].reason


# ---------------------------------------------------------------- detection, options, errors

BUILDERS = {
    "rsna": _rsna,
    "coronahack": _coronahack,
    "cohen": _cohen,
    "csv": lambda root: (png(root / "a.png"), (root / "m.csv").write_text("path,label\na.png,x\n"), root)[-1],
    "imagefolder": lambda root: (png(root / "x" / "a.png"), root)[-1],
    "dicom": lambda root: (dcm(root / "x" / "a"), root)[-1],
}


@pytest.mark.parametrize("name", list_formats())
def test_every_registered_format_is_detected(tmp_path, name):
    root = BUILDERS[name](tmp_path / "ds")
    assert detect_format(root) == name


def test_nothing_recognisable_is_one_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="no supported dataset found at .*looked for"):
        scan(tmp_path)
    with pytest.raises(DataError, match="no such file or folder"):
        scan(tmp_path / "missing")


def test_unknown_format_and_misplaced_option_are_clear_errors(tmp_path):
    png(tmp_path / "x" / "a.png")
    with pytest.raises(ChestLabError, match="unknown dataset format 'nope'; valid: rsna"):
        scan(tmp_path, "nope")
    with pytest.raises(ConfigError, match="'labels' does not apply to the imagefolder format"):
        scan(tmp_path, options={"labels": "x.csv"})


# ---------------------------------------------------------------- the cache


@pytest.fixture
def count_inspections(monkeypatch):
    import core.data.images as images

    calls = []
    real = images.inspect_image

    def counting(path):
        calls.append(path)
        return real(path)

    monkeypatch.setattr(images, "inspect_image", counting)
    return calls


def test_second_scan_is_served_from_the_cache_until_a_file_changes(tmp_path, count_inspections):
    root = tmp_path / "ds"
    files = [png(root / c / f"{i}.png") for c in ("a", "b") for i in range(3)]
    first = scan(root)
    assert len(count_inspections) == 6 and not first.from_cache
    count_inspections.clear()
    again = scan(root)
    assert again.from_cache and count_inspections == []
    pd.testing.assert_frame_equal(again.index, first.index)
    assert again.to_json() == first.to_json()

    os.utime(files[0], ns=(1, 1))  # touched: same size, other mtime
    assert not scan(root).from_cache and len(count_inspections) == 6
    png(root / "b" / "new.png")  # a new file changes its folder
    assert scan(root).classes == {"a": 3, "b": 4}
    count_inspections.clear()
    assert not scan(root, use_cache=False).from_cache and len(count_inspections) == 7


def test_cache_follows_the_csv_and_the_options(tmp_path, count_inspections):
    root = tmp_path / "ds"
    png(root / "a.png")
    png(root / "b.png")
    csv = root / "m.csv"
    csv.write_text("path,label,dx\na.png,x,n\nb.png,y,p\n")
    assert scan(root).classes == {"x": 1, "y": 1}
    assert scan(root).from_cache
    assert scan(root, "csv", options={"label_column": "dx"}).classes == {"n": 1, "p": 1}  # another key
    csv.write_text("path,label,dx\na.png,x,n\nb.png,x,p\nmissing.png,y,p\n")
    report = scan(root)
    assert not report.from_cache and report.classes == {"x": 2}
    png(root / "missing.png")  # the file a row named appears
    assert scan(root).classes == {"x": 2, "y": 1}


def test_cache_check_of_30k_files_is_fast(tmp_path):
    import time

    from core.data.index import _stamps, _unchanged

    folder = tmp_path / "many"
    folder.mkdir()
    files = [folder / f"{i}.png" for i in range(300)]
    for p in files:
        p.touch()
    stamps = _stamps([str(p) for p in files] * 100)  # 30k entries to check
    t = time.perf_counter()
    assert _unchanged(stamps)
    assert time.perf_counter() - t < 1.0


# ---------------------------------------------------------------- the CLI


def test_scan_cli_json_contract(tmp_path, capsys):
    from core.cli import main

    root = tmp_path / "ds"
    for split in ("train", "test"):
        png(root / split / "covid" / "1.png")
        png(root / split / "normal" / "1.png")
    write_bad_files(root / "train" / "covid")
    assert main(["scan", str(root), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == [
        "root",
        "format",
        "n_images",
        "classes",
        "splits",
        "metadata_columns",
        "n_boxes",
        "skipped",
    ]
    assert out["root"] == str(root) and out["format"] == "imagefolder" and out["n_images"] == 4
    assert out["splits"] == {"train": {"covid": 1, "normal": 1}, "test": {"covid": 1, "normal": 1}}
    assert len(out["skipped"]) == 4 and all(set(s) == {"path", "reason"} for s in out["skipped"])

    assert main(["scan", str(root), "--format", "imagefolder", "--no-cache"]) == 0
    human = capsys.readouterr().out
    assert "imagefolder, 4 images, 2 classes" in human and "skipped 4:" in human and "truncated" in human


def test_scan_cli_errors_are_one_line_with_exit_2(tmp_path, capsys):
    from core.cli import main

    assert main(["scan", str(tmp_path / "nowhere"), "--json"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "nowhere" in err[0]
    (tmp_path / "m.csv").write_text("file,label\n")
    assert main(["scan", str(tmp_path / "m.csv"), "--format", "csv"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "m.csv" in err[0] and "'path'" in err[0]


# ---------------------------------------------------------------- the real samples


@pytest.mark.shared_data
def test_shared_cohen(shared_data):
    root = shared_data / "cohen-covid-cxr"
    report = scan(root, "cohen")
    meta = pd.read_csv(root / "metadata.csv")
    on_disk = meta[meta["folder"] == "images"].drop_duplicates("filename")
    expected = on_disk["finding"].str.strip().value_counts().to_dict()
    assert report.classes == expected
    assert len(report.index) == len(list((root / "images").iterdir())) == 187
    volumes = [s for s in report.skipped if s.path.endswith(".nii.gz")]
    assert len(volumes) == 2 and all("not a 2-D image" in s.reason for s in volumes)
    assert len(report.skipped) == 7  # + 5 second rows naming an already indexed file


@pytest.mark.shared_data
def test_shared_covid_ct_as_imagefolder(shared_data):
    report = scan(shared_data / "covid-ct")
    assert report.format == "imagefolder"
    assert report.classes == {"CT_COVID": 100, "CT_NonCOVID": 100}
    assert report.skipped == []


@pytest.mark.shared_data
def test_shared_coronahack_csv_only_is_a_clear_error(shared_data):
    with pytest.raises(DataError, match="Chest_xray_Corona_Metadata.csv: no train/ or test/ image folder"):
        scan(shared_data / "coronahack")


@pytest.mark.shared_data
def test_shared_rsna(shared_data):
    report = scan(shared_data / "rsna-pneumonia")
    assert report.format == "rsna"
    assert report.classes == {"No Lung Opacity": 1}
    row = report.index.iloc[0]
    assert row["patient_id"] == "c64d5667-a776-4f95-9e21-bfabafb07740"
    assert row["class"] == "No Lung Opacity / Not Normal" and row["Target"] == 0
    assert (row["PatientAge"], row["PatientSex"], row["ViewPosition"]) == (68, "F", "AP")
    assert len(report.boxes) == 0
    assert len(report.skipped) == 1 and report.skipped[0].reason.startswith("26683 patients")


@pytest.mark.shared_data
def test_shared_dicom_samples(shared_data):
    root = shared_data / "dicom-samples"
    report = scan(root)
    assert report.format == "dicom"
    on_disk = sorted(str(p) for p in root.rglob("*") if p.is_file() and p.suffix in (".dcm", ""))
    assert sorted(report.index["path"]) == on_disk and len(on_disk) == 10
    assert report.classes == {"fo-dicom": 1, "highdicom": 1, "nema-wg04": 1, "pydicom": 7}
    idx = report.index.set_index(report.index["path"].map(lambda p: Path(p).name))
    assert idx.loc["CR-MONO1-10-chest", "PhotometricInterpretation"] == "MONOCHROME1"
    assert idx.loc["dx_image.dcm", "PatientAge"] == 5
    assert idx.loc["JPEG-lossy.dcm", "Modality"] == "NM"  # headers read even where pixels do not decode
