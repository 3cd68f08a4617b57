"""The Inspect page in AppTest, on runs trained through ChestLab's trainer: pick runs, an
image with a lesion box and three methods; the grid renders with each cell's seconds,
energy in the box and pointing game; opacity changes never recompute; the error list."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("streamlit")

from tests.apptest import assert_clean, open_page  # noqa: E402
from tests.conftest import write_boxed_dataset  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PAGE = str(ROOT / "pages" / "inspect.py")
CELL = re.compile(r"^\*\*(?P<method>[\w+-]+)\*\* · (?P<s>[\d.]+) s(?P<cached> \(cached\))?(?P<rest>.*) · target \w+$")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A workspace with two finished runs (ResNet-18, 1 epoch at 64 px) on a dataset with
    lesion boxes: (workspace, {name: run id})."""
    from core.config import RunConfig
    from core.runs.execute import execute_run, start_here
    from core.runs.store import RunStore

    root = tmp_path_factory.mktemp("inspect")
    data = root / "data"
    data.mkdir()
    write_boxed_dataset(data, n=4)
    ws = root / "workspace"
    ids = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHESTLAB_WORKSPACE", str(ws))
        store = RunStore(workspace=ws)
        for name, loss in (("insp-wce", "weighted_ce"), ("insp-focal", "focal")):
            config = RunConfig(data=str(data), format="csv", arch="resnet18", loss=loss, epochs=1, img_size=64,
                               batch_size=8, lr=1e-3, device="cpu", seed=0, name=name, pretrained="none")  # fmt: skip
            rec = start_here(store, config)
            result = execute_run(store, rec, workspace=ws)
            assert result["status"] == "done", result
            ids[name] = rec.id
        # a run still training: claimed, never finished, with the checkpoints of an epoch
        import shutil

        from core.runs import run_dir

        live = start_here(store, config.replace(name="insp-live"))  # claimed, never executed
        shutil.copytree(run_dir(rec.id, ws) / "checkpoints", run_dir(live.id, ws) / "checkpoints")
        ids["insp-live"] = live.id
    return ws, ids


@pytest.fixture
def page(trained, monkeypatch):
    ws, ids = trained
    monkeypatch.setenv("CHESTLAB_WORKSPACE", str(ws))
    return open_page(PAGE), ids


def _cells(at) -> list[dict[str, str]]:
    return [m.groupdict() for c in at.caption if (m := CELL.match(c.value))]


def test_two_runs_an_image_with_a_box_and_three_methods_render_a_grid(page):
    at, ids = page
    # the default: the newest finished run, the first test image, three methods
    assert [c["method"] for c in _cells(at)] == ["Grad-CAM", "Grad-CAM++", "Score-CAM"]

    done = [ids["insp-wce"], ids["insp-focal"]]
    at.multiselect(key="insp_runs").set_value(done).run()
    at.multiselect(key="insp_true").set_value(["opacity"]).run()  # images with a lesion box
    at.multiselect(key="insp_methods").set_value(["cam", "gradcam", "scorecam"]).run()
    assert_clean(at)
    cells = _cells(at)
    assert [c["method"] for c in cells] == ["CAM", "Grad-CAM", "Score-CAM"] * 2
    for c in cells:
        assert re.search(r"energy in box \d\.\d\d · peak in box: (yes|no)", c["rest"]), c
    assert any(not c["cached"] for c in cells)  # computed here, not all read back
    assert "top 32 channels" in cells[2]["rest"]  # Score-CAM's fast mode, with its k
    titles = [m.value for m in at.markdown if m.value.startswith("**insp-")]
    assert len(titles) == 2 and all(any(i in t for t in titles) for i in done)
    assert all(t.endswith(" · best.pt") for t in titles), titles  # finished runs: their best weights
    assert at.get("plotly_chart")  # the class probabilities of both runs

    # opacity and colormap only repaint: every map comes from the cache
    at.slider(key="insp_opacity").set_value(0.8).run()
    at.selectbox(key="insp_cmap").set_value(at.selectbox(key="insp_cmap").options[-1]).run()
    assert_clean(at)
    again = _cells(at)
    assert len(again) == 6 and all(c["cached"] for c in again)

    # the transpose: methods as rows, the same six cells, each caption naming its run
    at.toggle(key="insp_transpose").set_value(True).run()
    assert_clean(at)
    transposed = [c.value for c in at.caption if " · target " in c.value]
    assert len(transposed) == 6 and all(c.startswith(("insp-wce: ", "insp-focal: ")) for c in transposed)


def test_the_most_confident_mistakes_are_one_click_away(page, trained):
    """Both error lists, on a predictions file with known mistakes (what a one-epoch run
    predicts depends on the CPU's precision): one false positive, two false negatives, the
    most confident first, each count as the page says it."""
    import pandas as pd

    at, ids = page
    ws, _ = trained
    path = ws / "runs" / ids["insp-focal"] / "predictions_test.csv"  # the page's default run
    original = path.read_bytes()
    preds = pd.read_csv(path)
    assert sorted(preds["true_class"]) == ["normal"] * 4 + ["opacity"] * 4
    p = {("normal", 0): 0.9, ("opacity", 0): 0.35, ("opacity", 1): 0.2}  # P(opacity) of the mistakes
    for i, row in preds.iterrows():
        n = int(Path(row["path"]).stem.rsplit("_", 1)[1])
        prob = p.get((row["true_class"], n), 0.1 if row["true_class"] == "normal" else 0.8)
        preds.loc[i, ["prob/normal", "prob/opacity"]] = [1 - prob, prob]
        preds.loc[i, "pred_class"] = "opacity" if prob >= 0.5 else "normal"
        preds.loc[i, "pred"] = int(prob >= 0.5)
    try:
        preds.to_csv(path, index=False)
        at.run()
        for kind, button, want in (("false positives", "insp_fp", [0.9]), ("false negatives", "insp_fn", [0.2, 0.35])):
            at.button(key=button).click().run()
            assert_clean(at)
            note = [c.value for c in at.caption if kind in c.value]
            assert note and note[0].startswith(f"{len(want)} {kind} for opacity on test"), note
            table = at.dataframe[0].value
            assert list(table["prob/opacity"]) == pytest.approx(want, abs=1e-6)
        # clearing the list brings the filters back
        at.button(key="insp_clear").click().run()
        assert_clean(at)
        assert not [c.value for c in at.caption if "false negatives" in c.value]
        at.multiselect(key="insp_true").set_value(["normal"]).run()
        at.radio(key="insp_outcome").set_value("wrong").run()
        shown = at.dataframe[0].value  # the wrong normals: the one false positive
        assert list(shown["true_class"]) == ["normal"] and list(shown["prob/opacity"]) == pytest.approx([0.9])
    finally:
        path.write_bytes(original)


def test_an_uploaded_dicom_is_explained_and_a_bad_upload_is_named(page, tmp_path):
    """Upload: a 12-bit MONOCHROME1 DICOM (written here) gets predictions and maps, without
    box scores (no box is known); a file that is no image gets one error naming it."""
    import numpy as np

    from core.data.dicomwrite import write_dicom

    at, _ = page
    at.radio(key="insp_source").set_value("Upload").run()
    assert_clean(at)
    yy, xx = np.mgrid[0:96, 0:80]
    stored = (4095 - 3000 * np.exp(-((xx - 30) ** 2 + (yy - 50) ** 2) / 200)).astype(np.uint16)  # bright = low
    dcm = tmp_path / "chest.dcm"
    write_dicom(dcm, stored, photometric="MONOCHROME1", bits_stored=12)
    at.file_uploader(key="insp_upload").set_value(("chest.dcm", dcm.read_bytes(), "application/dicom")).run()
    assert_clean(at)
    cells = _cells(at)
    assert [c["method"] for c in cells] == ["Grad-CAM", "Grad-CAM++", "Score-CAM"]
    assert not any("energy in box" in c["rest"] for c in cells)
    assert at.get("plotly_chart")

    at.file_uploader(key="insp_upload").set_value(("bad.dcm", b"not a dicom at all" * 10, "application/dicom")).run()
    assert not at.exception
    assert [e.value for e in at.error] and "bad.dcm" in at.error[0].value, [e.value for e in at.error]
    assert not _cells(at)  # nothing is drawn for it


def test_a_running_run_is_inspected_with_its_latest_checkpoint(page):
    at, ids = page
    at.multiselect(key="insp_runs").set_value([ids["insp-focal"], ids["insp-live"]]).run()
    assert_clean(at)
    titles = {m.value.split(" · ")[0]: m.value for m in at.markdown if m.value.startswith("**insp-")}
    assert titles["**insp-focal**"].endswith(" · best.pt")
    assert titles["**insp-live**"].endswith(" · last.pt")
    assert len(_cells(at)) == 6


def test_a_checkpoint_other_than_best_or_last_is_refused():
    from core.evaluate.predict import checkpoint_path

    with pytest.raises(ValueError, match="'best' or 'last'"):
        checkpoint_path("any", "best.pt")


def test_another_target_layer_and_scores_over_the_split(page):
    """The layer picker recomputes the maps at that layer; 'Compute scores' gives one row per
    run x method over the split's images with a box (4 opacity test images here)."""
    at, ids = page
    at.multiselect(key="insp_methods").set_value(["gradcam", "scorecam"]).run()
    default = _cells(at)
    assert "layer3" in at.selectbox(key="insp_layer").options
    at.selectbox(key="insp_layer").set_value("layer3").run()
    assert_clean(at)
    cells = _cells(at)
    assert [c["method"] for c in cells] == ["Grad-CAM", "Score-CAM"] and len(default) == 2
    assert not any(c["cached"] for c in cells)  # a new layer: new maps, not the default layer's

    at.number_input(key="insp_score_limit").set_value(0).run()
    at.button(key="insp_score").click().run()
    assert_clean(at)
    table = at.dataframe[-1].value
    assert list(table["run"]) == ["insp-focal"] * 2 and list(table["method"]) == ["gradcam", "scorecam"]
    assert (table["n_images"] == 4).all()
    assert table["energy_in_box"].between(0, 1).all() and table["pointing_game"].between(0, 1).all()
    assert table["faithfulness"].notna().all()
