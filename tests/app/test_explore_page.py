"""The Explore page in AppTest on a small generated demo: every tab renders, the task builder
recounts, the PHI toggle masks and shows, the audit and the gallery work, errors are one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from tests.apptest import TIMEOUT, open_page
from tests.apptest import assert_clean as _ok

PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "explore.py")


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    from core.data.demo import write_demo

    root = tmp_path_factory.mktemp("demo") / "demo"
    write_demo(root, n_patients=20, size=128, workers=1)
    assert any(root.rglob("*.dcm")), "the small demo must hold a DICOM for the PHI test"
    return root


@pytest.fixture
def app(workspace, demo_root) -> AppTest:
    from core.data import catalog

    catalog.register_dataset(demo_root, name="demo")
    return open_page(PAGE)


def _open_tab(at: AppTest, name: str) -> AppTest:
    label = next(t.label for t in at.tabs if t.label.endswith(name))
    at.session_state["explore_tab"] = label
    at.run()
    _ok(at)
    return at


def _table(at: AppTest, key: str):
    return at.get_by_key(key).dataframe[0].value


def _metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_summary_and_every_tab_render(app, demo_root):
    from core.data.demo import demo_info

    assert _metric(app, "Images") == str(demo_info(demo_root).n_images)
    assert _metric(app, "Splits") == "3"
    assert len(app.get("plotly_chart")) == 1  # class balance
    assert app.dataframe[0].value.loc["normal", "total"] > 0
    _open_tab(app, "Metadata")
    assert len(app.get("plotly_chart")) >= 5  # age, sex, view (+ modality) + crosstab + missing values
    assert [c for c in app.multiselect(key="meta_columns").value][:3] == ["age", "sex", "view"]
    _open_tab(app, "Boxes")
    assert len(app.get("plotly_chart")) == 2
    _open_tab(app, "Gallery")
    assert len(app.get("image")) == 24
    _open_tab(app, "Intensity")
    app.button(key="int_run").click().run()
    _ok(app)
    assert float(_metric(app, "Mean")) > 0 and len(app.get("plotly_chart")) == 2


def test_percent_toggle_changes_the_figure(app):
    app.segmented_control(key="balance_mode").set_value("percent").run()
    _ok(app)
    assert "% of the split" in app.get("plotly_chart")[0].proto.spec


def test_task_builder_merge_changes_the_counts(app):
    _open_tab(app, "Task builder")
    before = _table(app, "tb_table")
    assert {"pneumonia", "covid"} <= set(before.index)
    app.multiselect(key="tb_merge_values").set_value(["pneumonia", "covid"])
    app.text_input(key="tb_merge_name").set_value("pneumonia-related")
    app.button(key="tb_merge_add").click().run()
    _ok(app)
    after = _table(app, "tb_table")
    assert "covid" not in after.index and "pneumonia" not in after.index
    assert (
        after.loc["pneumonia-related", "total"]
        == before.loc["pneumonia", "total"] + before.loc["covid", "total"]
    )
    app.multiselect(key="tb_drop").set_value(["normal"]).run()
    assert list(_table(app, "tb_table").index) == ["pneumonia-related"]
    app.multiselect(key="tb_drop").set_value([]).run()
    app.text_input(key="tb_name").set_value("merged")
    app.button(key="tb_save").click().run()
    _ok(app)
    from core.data.tasks import load_task

    task, dataset = load_task("merged")
    assert task.merge == {"pneumonia": "pneumonia-related", "covid": "pneumonia-related"}
    assert dataset["path"].endswith("demo")


def test_grouped_split_and_filters_recount(app):
    _open_tab(app, "Task builder")
    total = _table(app, "tb_table")["total"].sum()
    app.radio(key="tb_split").set_value("grouped").run()
    _ok(app)
    assert _table(app, "tb_table")["total"].sum() == total
    app.selectbox(key="tb_f_col").set_value("sex")
    app.selectbox(key="tb_f_op").set_value("==")
    app.text_input(key="tb_f_val").set_value("F")
    app.button(key="tb_f_add").click().run()
    _ok(app)
    assert 0 < _table(app, "tb_table")["total"].sum() < total


def test_phi_toggle_hides_and_shows_the_patient_name(app):
    _open_tab(app, "Gallery")
    app.selectbox(key="gal_column").set_value("file_format").run()
    app.multiselect(key="gal_values").set_value(["DICOM"]).run()
    app.button(key="gal_open_0").click().run()
    _ok(app)
    header = _table(app, "gal_header").set_index("keyword")
    assert header.loc["PatientName", "value"] == "•••"
    app.toggle(key="gal_phi").set_value(True).run()
    _ok(app)
    header = _table(app, "gal_header").set_index("keyword")
    assert header.loc["PatientName", "value"] == "Anonymous"
    assert len(app.get("image")) >= 2  # the thumbnails and the full image


def test_audit_compares_pictures_and_saves_a_resplit(app):
    _open_tab(app, "Leakage audit")
    assert _metric(app, "Patients in several splits") == "0"
    assert _metric(app, "Exact duplicates across splits") == "not checked"
    app.button(key="audit_hash").click().run()
    _ok(app)
    assert _metric(app, "Exact duplicates across splits") == "0"
    app.button(key="resplit_save").click().run()
    _ok(app)
    from core.data.tasks import load_task

    task, _ = load_task("demo-by-patient")
    assert task.split.kind == "grouped"


def test_leaking_copy_is_reported_with_thumbnails(workspace, tmp_path):
    from core.data import catalog

    root = tmp_path / "leaky"
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / "train" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(
                root / "train" / cls / f"{i}.png"
            )
    shutil.copytree(root / "train", root / "val")
    catalog.register_dataset(root, name="leaky")
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT).run()
    _open_tab(at, "Leakage audit")
    at.button(key="audit_hash").click().run()
    _ok(at)
    assert _metric(at, "Exact duplicates across splits") == "6"
    pairs = _table(at, "pairs_across")
    assert len(pairs) == 6 and pairs["image a"].str.startswith("data:image/jpeg;base64,").all()


def test_add_a_dataset_by_path(app, tmp_path):
    root = tmp_path / "folders"
    for cls in ("covid", "normal"):
        (root / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((16, 16), 40 * i, np.uint8)).save(root / cls / f"{i}.png")
    app.text_input(key="add_path").set_value(str(root)).run()
    app.button(key="add_go").click().run()
    _ok(app)
    assert app.selectbox(key="explore_dataset").value == "folders"
    assert _metric(app, "Images") == "4" and _metric(app, "Splits") == "none"


def test_rescan_reads_added_files(workspace, tmp_path):
    from core.data import catalog

    root = tmp_path / "grows"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / cls / "0.png")
    catalog.register_dataset(root, name="grows")
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT).run()
    assert _metric(at, "Images") == "2"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "a" / "1.png")
    at.button(key="explore_rescan").click().run()
    _ok(at)
    assert _metric(at, "Images") == "3"


def test_a_missing_dataset_is_one_line_error(workspace, tmp_path):
    from core.data import catalog

    gone = tmp_path / "gone"
    gone.mkdir()
    catalog.register_dataset(gone, name="gone")
    gone.rmdir()
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT).run()
    assert not at.exception
    assert len(at.error) == 1 and "no such file or folder" in at.error[0].value
