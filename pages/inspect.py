"""Inspect: what a run predicts for an image, and where it looks.

Thin: predictions and maps come from ``core.explain`` (maps cached by run, checkpoint,
image, method, layer and target, so opacity and colormap changes never recompute), the
error lists from ``core.explain.browse``. Models are loaded once per checkpoint and shared
between sessions (``st.cache_resource``); core holds a lock per model while it runs one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from core.explain import browse
from core.runs import run_dir
from core.runs.store import RunRecord, RunStatus
from pages import run_widgets as rw
from pages.common import guard

DEFAULT_METHODS = ("gradcam", "gradcam++", "scorecam")
DISPLAY = 320  # longest side of a grid cell, pixels


@dataclass
class Picked:
    image: np.ndarray  # uint8 gray (or RGB) as decoded
    name: str
    path: str | None  # in the run's dataset, else None (an upload)


# ---------------------------------------------------------------- models and data


@st.cache_resource(show_spinner=False, max_entries=6)
def _load(run_id: str, which: str, mtime: float, workspace: str) -> Any:
    from core.evaluate.predict import load_run_model

    return load_run_model(run_id, which, workspace)


def checkpoint_of(run: RecordLike) -> str:
    """A running run is inspected with its latest weights; any other with its best."""
    return "last" if run.status is RunStatus.RUNNING else "best"


def loaded_model(run: RecordLike) -> Any:
    from core.evaluate.predict import checkpoint_path
    from core.workspace import workspace_root

    which = checkpoint_of(run)
    path = checkpoint_path(run.id, which)
    return _load(run.id, which, os.path.getmtime(path), str(workspace_root()))


RecordLike = RunRecord


@st.cache_data(show_spinner=False, max_entries=64)
def _read_gray(path: str, mtime: float) -> np.ndarray:
    from core.data.images import read_gray

    return read_gray(path)


def read_gray(path: str) -> np.ndarray:
    return _read_gray(path, os.path.getmtime(path))


@st.cache_data(show_spinner=False, max_entries=32)
def _predictions(run_id: str, split: str, mtime: float) -> pd.DataFrame | None:
    return browse.load_predictions(run_id, split)


def predictions(run_id: str, split: str) -> pd.DataFrame | None:
    path = run_dir(run_id) / f"predictions_{split}.csv"
    return _predictions(run_id, split, os.path.getmtime(path)) if path.exists() else None


@st.cache_data(show_spinner=False, max_entries=8)
def _estimate(run_id: str, mtime: float, k: int) -> float:
    from core.explain.service import estimate_scorecam_seconds

    run = rw.run_store().get_run(run_id)
    return estimate_scorecam_seconds(loaded_model(run), k or None)


def has_checkpoint(run: RunRecord) -> bool:
    folder = run_dir(run.id) / "checkpoints"
    return (folder / "best.pt").exists() or (folder / "last.pt").exists()


# ---------------------------------------------------------------- choosing


def choose_runs() -> list[RunRecord]:
    runs = [r for r in rw.run_store().list_runs() if has_checkpoint(r)]
    if not runs:
        st.info("No run has a checkpoint yet. Train one first: a run can be inspected once it has "
                "finished an epoch.", icon=":material/info:")
        rw.page_link("pages/train.py", "Go to Train", ":material/model_training:")
        st.stop()
    labels = {r.id: f"{r.name} · {r.status.value} · {r.id}" for r in runs}
    done = [r.id for r in runs if r.status is RunStatus.DONE]
    picked = st.multiselect(
        "Runs", list(labels), default=(done or [runs[0].id])[:1], format_func=labels.get, key="insp_runs",
        help="Finished runs use their best checkpoint; running ones their latest.",
    )
    if not picked:
        st.info("Pick at least one run.", icon=":material/info:")
        st.stop()
    by_id = {r.id: r for r in runs}
    return [by_id[i] for i in picked]


def choose_from_dataset(run: RunRecord, classes: list[str]) -> Picked | None:
    c1, c2, c3, c4 = st.columns([1, 2, 2, 1.4])
    split = c1.selectbox("Split", ["test", "val"], key="insp_split")
    df = predictions(run.id, split)
    if df is None:
        st.info(f"Run {run.name} has no predictions on {split} yet (they are written when a run finishes).",
                icon=":material/info:")
        return None
    true_c = c2.multiselect("True class", classes, key="insp_true")
    pred_c = c3.multiselect("Predicted class", classes, key="insp_pred")
    outcome = c4.radio("Outcome", browse.OUTCOMES, horizontal=True, key="insp_outcome")
    positives = [c for c in classes if c != classes[0]] or classes
    e1, e2, e3 = st.columns([1.4, 1, 1])
    positive = e1.selectbox("Positive class for the error lists", positives, key="insp_positive")
    if e2.button("False positives, most confident first", key="insp_fp", icon=":material/report:"):
        st.session_state["insp_errors"] = "fp"
    if e3.button("False negatives, most confident first", key="insp_fn", icon=":material/search_off:"):
        st.session_state["insp_errors"] = "fn"
    kind = st.session_state.get("insp_errors")
    if kind:
        table = browse.errors_of(df, classes, positive, kind)
        st.caption(f"{len(table)} {browse.ERROR_KINDS[kind]} for {positive} on {split} "
                   f"(clear the list to go back to the filters).")
        if st.button("Clear the error list", key="insp_clear"):
            st.session_state.pop("insp_errors", None)
            st.rerun()
    else:
        table = browse.filter_predictions(df, classes, true_c, pred_c, outcome)
    if table.empty:
        st.info("No image matches these filters.", icon=":material/filter_alt_off:")
        return None
    shown = table.assign(image=table["path"].map(os.path.basename))[
        ["image", "true_class", "pred_class", "confidence", *browse.prob_columns(classes)]
    ]
    event = st.dataframe(
        shown, hide_index=True, height=220, on_select="rerun", selection_mode="single-row", key="insp_table",
        column_config={c: st.column_config.NumberColumn(format="%.3f") for c in shown.columns if c.startswith(
            ("prob/", "confidence"))},
    )
    rows = event.selection.rows if event and event.selection else []
    row = table.iloc[rows[0] if rows else 0]
    return Picked(read_gray(row["path"]), os.path.basename(row["path"]), row["path"])


def choose_upload() -> Picked | None:
    from core.data.images import read_image_bytes

    up = st.file_uploader("A PNG, JPEG or DICOM image", type=["png", "jpg", "jpeg", "dcm", "dicom", "bmp", "tif", "tiff"],
                          key="insp_upload")
    if up is None:
        return None
    with guard("reading the upload"):
        return Picked(read_image_bytes(up.getvalue(), up.name), up.name, None)
    return None


# ---------------------------------------------------------------- showing


def prediction_chart(runs: list[RunRecord], probs: dict[str, np.ndarray], classes_of: dict[str, list[str]],
                     true_class: str | None) -> None:
    from core.plots.inspect import probability_figure

    fig = probability_figure([r.name for r in runs], [classes_of[r.id] for r in runs], [probs[r.id] for r in runs])
    title = "Class probabilities" + (f" (true class: {true_class})" if true_class else " (true class unknown)")
    st.markdown(f"**{title}**")
    st.plotly_chart(fig, key="insp_probs", config={"displayModeBar": False})


def cell_image(image: np.ndarray, cam: np.ndarray | None, boxes: list, opacity: float, colormap: str) -> np.ndarray:
    from PIL import Image

    from core.explain.overlay import draw_boxes, overlay, to_rgb

    h, w = image.shape[:2]
    scale = DISPLAY / max(h, w)
    small = np.asarray(Image.fromarray(image).resize((max(1, round(w * scale)), max(1, round(h * scale))),
                                                     Image.Resampling.LANCZOS))
    rgb = overlay(small, cam, opacity, colormap) if cam is not None else to_rgb(small)
    if boxes:
        rgb = draw_boxes(rgb, [(x * scale, y * scale, bw * scale, bh * scale) for x, y, bw, bh in boxes])
    return rgb


def caption(result: Any, scores: tuple[float, bool] | None) -> str:
    parts = [f"**{result.label}**", f"{result.seconds:.2f} s" + (" (cached)" if result.cached else "")]
    if result.top_k:
        parts.append(f"top {result.top_k} channels")
    if scores is not None:
        parts.append(f"energy in box {scores[0]:.2f}")
        parts.append("peak in box: " + ("yes" if scores[1] else "no"))
    return " · ".join(parts)


# ---------------------------------------------------------------- the page


def main() -> None:
    from core.explain.methods import get_method, list_methods
    from core.explain.overlay import COLORMAPS, DEFAULT_COLORMAP, grid_png
    from core.explain.scorecam import DEFAULT_TOP_K
    from core.explain.service import explain, image_info, predict

    st.title("Inspect", anchor=False)
    st.caption("What each run predicts for an image, and where it looks: CAM methods side by side, "
               "scored against the lesion box when the dataset has one.")
    runs = choose_runs()
    with st.spinner("Loading the models..."):
        models = {r.id: loaded_model(r) for r in runs}
    first = models[runs[0].id]

    st.subheader("Image", anchor=False)
    source = st.radio("Source", ["From the run's dataset", "Upload"], horizontal=True, key="insp_source",
                      label_visibility="collapsed")
    picked = choose_from_dataset(runs[0], first.classes) if source != "Upload" else choose_upload()
    if picked is None:
        st.stop()

    info = image_info(first, picked.path) if picked.path else None
    boxes = info.boxes if info else []
    true_class = first.classes[info.true_index] if info and info.true_index is not None else None
    probs = {r.id: predict(models[r.id], picked.image) for r in runs}
    prediction_chart(runs, probs, {r.id: models[r.id].classes for r in runs}, true_class)

    st.subheader("Explanations", anchor=False)
    labels = {m: get_method(m).label for m in list_methods()}
    c1, c2, c3 = st.columns([3, 1.3, 1.3])
    methods = c1.multiselect("Methods", list(labels), default=[m for m in DEFAULT_METHODS if m in labels],
                             format_func=labels.get, key="insp_methods")
    targets = ["predicted"] + (["true"] if true_class else []) + list(first.classes)
    target = c2.selectbox("Target class", targets, key="insp_target",
                          help="Explain the predicted class, the true class, or any class.")
    layer = "default"
    if len({m.arch for m in models.values()}) == 1:
        from core.explain.service import default_layers

        options = ["default"] + [n for n in _layers(runs[0].id, first) if n]
        layer = c3.selectbox("Target layer", options, key="insp_layer",
                             format_func=lambda n: f"default ({', '.join(default_layers(first.arch))})"
                             if n == "default" else n)
    d1, d2, d3, d4, d5 = st.columns([1.2, 1.2, 1, 1, 1.2])
    opacity = d1.slider("Opacity", 0.0, 1.0, 0.45, 0.05, key="insp_opacity")
    colormap = d2.selectbox("Colormap", COLORMAPS, index=COLORMAPS.index(DEFAULT_COLORMAP), key="insp_cmap")
    show_original = d3.toggle("Original beside", value=True, key="insp_original")
    show_boxes = d4.toggle("Lesion boxes", value=True, key="insp_boxes", disabled=not boxes,
                           help=None if boxes else "This image has no lesion box in the dataset.")
    transpose = d5.toggle("Methods as rows", value=False, key="insp_transpose")
    top_k = DEFAULT_TOP_K
    if "scorecam" in methods:
        k1, k2 = st.columns([2, 3])
        top_k = int(k1.number_input("Score-CAM channels (0 = all: exact but slow)", 0, 4096, DEFAULT_TOP_K, 8,
                                    key="insp_topk"))
        est = _estimate(runs[0].id, first.checkpoint_mtime, top_k)
        k2.caption(f"Estimated Score-CAM time per map for {runs[0].name}: about {est:.1f} s "
                   f"({'every channel' if not top_k else f'the {top_k} most informative channels'}).")
    if not methods:
        st.info("Pick at least one method.", icon=":material/info:")
        st.stop()
    if not boxes and picked.path:
        st.caption("No lesion box for this image in the dataset: energy-in-box and the pointing game need one.")

    results: dict[str, list[Any]] = {}
    with st.status("Computing maps...", expanded=False) as status:
        for r in runs:
            bar = st.progress(0.0, text=r.name)
            results[r.id] = explain(
                models[r.id], picked.image, methods, None if target == "predicted" else target,
                None if layer == "default" else layer, true_index=info.true_index if info else None,
                top_k=top_k or None, errors="collect",
                progress=lambda d, t, m, bar=bar, r=r: bar.progress(d / max(t, 1), text=f"{r.name}: {m}"),
            )
        status.update(label="Maps ready", state="complete")

    h, w = picked.image.shape[:2]
    drawn = boxes if show_boxes else []
    cells, titles = [], []
    grid: list[list[tuple[str, np.ndarray | None, str]]] = []
    for r in runs:
        row = []
        if show_original:
            row.append((f"{r.name}: original", cell_image(picked.image, None, drawn, 0, colormap), "Original"))
        for res in results[r.id]:
            if res.error:
                row.append((f"{r.name}: {res.label}", None, res.error))
                continue
            scores = browse.box_scores(res.cam, boxes, w, h)
            row.append((f"{r.name}: {res.label}", cell_image(picked.image, res.cam, drawn, opacity, colormap),
                        caption(res, scores) + f" · target {res.target_class}"))
        grid.append(row)
    if transpose:
        grid = [list(col) for col in zip(*grid, strict=True)]
    for ri, row in enumerate(grid):
        if not transpose:
            st.markdown(f"**{runs[ri].name}** · {runs[ri].config.get('arch')} · {runs[ri].id} · "
                        f"{os.path.basename(models[runs[ri].id].checkpoint)}")
        cols = st.columns(len(row))
        for ci, (title, img, text) in enumerate(row):
            with cols[ci]:
                if img is None:
                    st.warning(text, icon=":material/block:")
                else:
                    st.image(img, width="stretch")
                    st.caption(text if not transpose else f"{title} · {text}")
                    from core.data.images import encode_png

                    st.download_button("PNG", encode_png(img), file_name=f"{_slug(title)}.png", mime="image/png",
                                       key=f"insp_dl_{ri}_{ci}", icon=":material/download:")
                cells.append(img)
                titles.append(title)
    png = grid_png(cells, len(grid), len(grid[0]), titles)
    st.download_button("Download the whole grid (PNG)", png, file_name=f"cam-grid-{_slug(picked.name)}.png",
                       mime="image/png", key="insp_dl_grid", icon=":material/grid_view:")

    split_scores(runs, models, methods, top_k)


def _slug(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:80] or "image"


@st.cache_data(show_spinner=False, max_entries=16)
def _layers_cached(run_id: str, mtime: float, _model: Any) -> list[str]:
    from core.explain.service import list_layers

    return list_layers(_model.model)


def _layers(run_id: str, loaded: Any) -> list[str]:
    return _layers_cached(run_id, loaded.checkpoint_mtime, loaded)


def split_scores(runs: list[RunRecord], models: dict[str, Any], methods: list[str], top_k: int) -> None:
    from core.explain.service import score_split

    with st.expander("Scores over a split (images with lesion boxes)", icon=":material/leaderboard:"):
        st.caption("Mean share of CAM energy inside the lesion box, pointing-game hit rate, and faithfulness "
                   "(deletion AUC: lower means removing the most relevant pixels first destroys the "
                   "prediction faster). Computed once, then cached.")
        c1, c2 = st.columns(2)
        split = c1.selectbox("Split", ["test", "val"], key="insp_score_split")
        limit = int(c2.number_input("Images at most (0 = all)", 0, 10_000, 30, 10, key="insp_score_limit"))
        if not st.button("Compute scores", key="insp_score", icon=":material/play_arrow:"):
            return
        rows = []
        for r in runs:
            bar = st.progress(0.0, text=f"{r.name}: scoring")
            with guard(f"scoring {r.name}"):
                res = score_split(models[r.id], split, methods, limit=limit or None, top_k=top_k or None,
                                  progress=lambda d, t, m, bar=bar, r=r: bar.progress(d / max(t, 1),
                                                                                     text=f"{r.name}: {m}"))
                for row in res.table:
                    rows.append({"run": r.name, **row})
        if rows:
            st.dataframe(pd.DataFrame(rows), hide_index=True, column_config={
                k: st.column_config.NumberColumn(format="%.3f")
                for k in ("energy_in_box", "pointing_game", "faithfulness", "seconds_per_image")})


with guard("the Inspect page"):
    main()
