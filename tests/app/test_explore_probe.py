"""The Explore page's shortcut probe in AppTest: on a small dataset where one class was saved
as RGB JPEG and the other as grey PNG, the probe (a button) flags the file format with a
plain warning; on a dataset saved alike it says no shortcut was found. Results are kept per
dataset and label, so reopening the tab does not probe again."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from tests.apptest import assert_clean as _ok
from tests.apptest import open_page

PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "explore.py")
N = 30  # images per class: above the probe's 10 groups per class, enough for 5 folds


def _write(root: Path, shortcut: bool, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for cls in ("normal", "pneumonia"):
        folder = root / "train" / cls
        folder.mkdir(parents=True)
        for i in range(N):
            spread = int(rng.integers(2, 120))  # file sizes vary, the same way in both classes
            img = Image.fromarray(rng.integers(128 - spread, 128 + spread, (32, 32), dtype=np.uint8))
            if shortcut and cls == "pneumonia":
                img.convert("RGB").save(folder / f"{i}.jpg", quality=90)  # the other hospital's scanner
            else:
                img.save(folder / f"{i}.png")
    return root


@pytest.fixture
def app(workspace, tmp_path) -> AppTest:
    from core.data import catalog

    catalog.register_dataset(_write(tmp_path / "planted", True, 0), name="planted")
    catalog.register_dataset(_write(tmp_path / "alike", False, 1), name="alike")
    return open_page(PAGE)


def _open_probe(at: AppTest) -> None:
    at.session_state["explore_tab"] = next(t.label for t in at.tabs if t.label.endswith("Shortcut probe"))
    at.run()
    _ok(at)


def _metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_the_probe_flags_a_planted_file_format_shortcut(app):
    assert app.selectbox(key="explore_dataset").value == "planted"
    _open_probe(app)
    assert not app.warning and any("Run the probe" in c.value for c in app.caption)
    app.button(key="probe_run").click().run()
    _ok(app)
    assert float(_metric(app, "File properties alone: AUC")) >= 0.9
    assert _metric(app, "Images probed") == str(2 * N)
    [warning] = [w.value for w in app.warning]
    assert (
        "alone predicts the label (AUC" in warning and "a model can learn the file, not the lung" in warning
    )
    columns = next(d.value for d in app.dataframe if "AUC alone" in d.value.columns)
    assert columns["kind"].iloc[0] == "file properties"
    assert columns["column"].iloc[0] in ("file_format", "file_mode", "file_bytes", "file_bit_depth")
    # Another rerun shows the kept result without probing again.
    app.run()
    assert app.warning and "SHORTCUT SUSPECTED" in app.caption[-1].value


def test_images_saved_alike_show_no_shortcut(app):
    app.selectbox(key="explore_dataset").set_value("alike").run()
    _open_probe(app)
    app.button(key="probe_run").click().run()
    _ok(app)
    assert not app.warning
    assert any(s.value.startswith("No shortcut found") for s in app.success)
    assert float(_metric(app, "File properties alone: AUC")) < 0.7
