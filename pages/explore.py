"""Explore: what is in a dataset, and can its splits be trusted?

Thin: widgets in, ``core`` out. Tables come from ``core.explore`` and ``core.data.audit``,
figures from ``core.plots.explore``. Data is cached per dataset key: the dataset's path,
format, options and the identity of its cached index (the index card's modification time),
so a rescan invalidates every table at once.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from core import explore as ex
from core.data import catalog
from core.plots import explore as figs
from core.plots.style import SPLIT_COLORS
from pages.common import guard, progress_bar

TABS = {
    "balance": ":material/bar_chart: Class balance",
    "metadata": ":material/table_chart: Metadata",
    "task": ":material/tune: Task builder",
    "audit": ":material/policy: Leakage audit",
    "gallery": ":material/photo_library: Gallery",
    "boxes": ":material/crop_free: Boxes",
    "intensity": ":material/contrast: Intensity",
    "probe": ":material/troubleshoot: Shortcut probe",
}
PER_PAGE = 24
GRID_COLUMNS = 4
PAIRS_PER_PAGE = 20
MANY_CLASSES = 6
PROBE_RESULTS_KEPT = 16
# How a flagged file property reads in a sentence ("The file format alone predicts the label").
FEATURE_WORDS = {
    "file_format": "file format",
    "file_mode": "colour mode",
    "file_bit_depth": "bit depth",
    "file_width": "image width",
    "file_height": "image height",
    "file_bytes": "file size",
    "PhotometricInterpretation": "photometric interpretation",
    "BitsStored": "bit depth",
    "BitsAllocated": "bit depth",
    "Rows": "image height",
    "Columns": "image width",
    "TransferSyntax": "DICOM transfer syntax",
}


# ---------------------------------------------------------------- data (cached)


def _identity(path: str, fmt: str, options: dict[str, Any]) -> str | None:
    """The cached index's card: its key and modification time (None before the first scan)."""
    from core.data.index import IndexCache, normalise_options

    cache = IndexCache()
    root = Path(os.path.abspath(os.path.expanduser(path)))
    key = cache.key(root, fmt, normalise_options(options))
    try:
        return f"{key}:{(cache.dir / f'{key}.json').stat().st_mtime_ns}"
    except OSError:
        return None


@st.cache_resource(max_entries=4, show_spinner="Reading the dataset index...")
def _report_for(ds: str):
    from core.data.index import scan

    path, fmt, options, _ = json.loads(ds)
    return scan(path, fmt, options=options)


def _index(ds: str) -> pd.DataFrame:
    return _report_for(ds).index


@st.cache_data(max_entries=8, show_spinner=False)
def _summary(ds: str) -> ex.Summary:
    report = _report_for(ds)
    return ex.summarize(report.index, report.boxes, len(report.skipped))


@st.cache_data(max_entries=8, show_spinner=False)
def _colors(ds: str) -> dict[str, str]:
    """One colour per class for every figure of the dataset."""
    from core.plots.style import color_map

    return color_map(ex.class_order(_index(ds)))


@st.cache_data(max_entries=8, show_spinner=False)
def _class_counts(ds: str) -> pd.DataFrame:
    return ex.class_counts(_index(ds))


@st.cache_data(max_entries=8, show_spinner=False)
def _infos(ds: str) -> dict[str, ex.ColumnInfo]:
    return ex.column_infos(_index(ds))


@st.cache_data(max_entries=64, show_spinner=False)
def _distribution(ds: str, column: str, by: str | None, bins: int, top_n: int) -> ex.Distribution:
    return ex.distribution(_index(ds), column, by=by, bins=bins, top_n=top_n)


@st.cache_data(max_entries=16, show_spinner=False)
def _crosstab(ds: str, row: str, column: str) -> pd.DataFrame:
    return ex.crosstab(_index(ds), row, column)


@st.cache_data(max_entries=8, show_spinner=False)
def _missing(ds: str) -> pd.DataFrame:
    return ex.missing_values(_index(ds))


@st.cache_data(max_entries=32, show_spinner=False)
def _values(ds: str, column: str) -> pd.DataFrame:
    return ex.value_counts(_index(ds), column)


@st.cache_data(max_entries=64, show_spinner=False)
def _task_preview(ds: str, task_json: str) -> ex.TaskPreview:
    from core.data.tasks import Task

    return ex.task_preview(_index(ds), Task.from_dict(json.loads(task_json)))


@st.cache_data(max_entries=8, show_spinner=False)
def _hashes_if_cached(ds: str) -> pd.DataFrame | None:
    """The images' hashes when every one is in the workspace cache, else None."""
    from core.data.audit import cached_hashes

    return cached_hashes(_index(ds)["path"].tolist())


@st.cache_data(max_entries=8, show_spinner=False)
def _audit(ds: str, with_images: bool, threshold: int):
    from core.data.audit import audit

    hashes = _hashes_if_cached(ds) if with_images else None
    return audit(_index(ds), hashes, threshold)


@st.cache_data(max_entries=8, show_spinner=False)
def _within(ds: str, threshold: int) -> pd.DataFrame:
    from core.data.audit import duplicates_within

    return duplicates_within(_hashes_if_cached(ds), threshold)


@st.cache_data(max_entries=8, show_spinner=False)
def _box_stats(ds: str) -> ex.BoxStats:
    report = _report_for(ds)
    return ex.box_stats(report.boxes, report.index)


@st.cache_data(max_entries=32, show_spinner=False)
def _gallery_rows(ds: str, classes: tuple, splits: tuple, column: str | None, values: tuple) -> pd.DataFrame:
    rows = ex.filter_index(_index(ds), classes, splits, column, values)
    return rows[["path", "label", "split"]].reset_index(drop=True)


@st.cache_data(max_entries=16, show_spinner=False)
def _full_image(ds: str, path: str):
    boxes = _report_for(ds).boxes
    mine = boxes[boxes["path"] == path]
    label = str(_index(ds).loc[_index(ds)["path"] == path, "label"].iloc[0])
    # A box without its own label is drawn in its image's class colour.
    mine = mine.assign(label=mine["label"].fillna("").astype(str).replace("", label))
    return ex.image_with_boxes(path, mine, colors=_colors(ds))


@st.cache_data(max_entries=16, show_spinner=False)
def _dicom_header(path: str, show_phi: bool) -> pd.DataFrame:
    from core.data.dicom import header_table, read_header

    table = pd.DataFrame(
        header_table(read_header(path), mask_phi=not show_phi), columns=["tag", "keyword", "value"]
    )
    # The patient and image elements first; the file meta group (0002) says little to a person.
    meta = table["tag"].str.startswith("(0002,")
    return pd.concat([table[~meta], table[meta]], ignore_index=True)


@st.cache_data(max_entries=8, show_spinner=False)
def _intensity_sample(ds: str, n: int) -> tuple[list[str], list[str]]:
    rows = ex.sample_rows(_index(ds), n)
    return rows["path"].tolist(), rows["label"].astype(str).tolist()


# ---------------------------------------------------------------- picking a dataset


def _add_dataset_form() -> None:
    from core.data.formats import FORMATS
    from core.data.index import scan

    path = st.text_input("Folder or CSV", key="add_path", placeholder="/data/chest_xray")
    fmt = st.selectbox("Format", ["auto", *FORMATS.names()], key="add_format",
                       format_func=lambda f: "detect" if f == "auto" else f"{f}: {FORMATS.get(f).description}")  # fmt: skip
    options: dict[str, str] = {}
    if fmt != "auto":
        for opt in FORMATS.get(fmt).options:
            value = st.text_input(f"{opt.replace('_', ' ')} (optional)", key=f"add_opt_{opt}")
            if value.strip():
                options[opt] = value.strip()
    name = st.text_input("Name (optional)", key="add_name", placeholder="the folder's name")
    if st.button(
        "Scan and add", key="add_go", icon=":material/add:", type="primary", disabled=not path.strip()
    ):
        with guard("adding the dataset"):
            bar, progress = progress_bar("Scanning")
            report = scan(path.strip(), fmt, options=options, progress=progress, use_cache=False)
            bar.empty()
            ref = catalog.register_dataset(path.strip(), fmt, options, name.strip() or None)
            st.session_state["explore_dataset"] = ref.name
            # A toast sent right before a rerun is lost: shown by main() on the next run.
            st.session_state["explore_added"] = f"Added {ref.name}: {len(report.index):,} images"
            st.rerun()


def _pick_dataset() -> catalog.DatasetRef | None:
    datasets = {d.name: d for d in catalog.list_datasets()}
    left, mid, right = st.columns([4, 1, 1], vertical_alignment="bottom")
    with right.popover("Add a dataset", icon=":material/add:", width="stretch"):
        _add_dataset_form()
    if not datasets:
        st.info("No dataset in this workspace yet: add one by its folder or CSV.", icon=":material/info:")
        return None
    if st.session_state.get("explore_dataset") not in datasets:
        st.session_state["explore_dataset"] = next(iter(datasets))
    name = left.selectbox("Dataset", list(datasets), key="explore_dataset",
                          format_func=lambda n: f"{n}  ({datasets[n].path})")  # fmt: skip
    if mid.button("Rescan", key="explore_rescan", icon=":material/refresh:", width="stretch",
                  help="Read the dataset again (after you added, removed or edited files)"):  # fmt: skip
        st.session_state["explore_force_scan"] = name
    return datasets[name]


def _dataset_key(ref: catalog.DatasetRef) -> str:
    """Scan (with a progress bar) when there is no cached index or a rescan was asked; the
    key names the dataset and its cached index."""
    from core.data.index import scan

    forced = st.session_state.pop("explore_force_scan", None) == ref.name
    identity = None if forced else _identity(ref.path, ref.format, ref.options)
    if identity is None:
        bar, progress = progress_bar(f"Scanning {ref.name}")
        scan(ref.path, ref.format, options=ref.options, progress=progress, use_cache=not forced)
        bar.empty()
        identity = _identity(ref.path, ref.format, ref.options) or "uncached"
    return json.dumps([ref.path, ref.format, ref.options, identity])


# ---------------------------------------------------------------- sections


def _summary_section(ds: str) -> None:
    s = _summary(ds)
    report = _report_for(ds)
    st.caption(
        f"`{report.root}` read as **{report.format}**"
        + (" (from the cached index)" if report.from_cache else "")
    )
    cols = st.columns(7)
    cols[0].metric("Images", f"{s.n_images:,}")
    cols[1].metric("Classes", s.n_classes)
    named = [k for k in s.splits if k != ex.UNSPLIT]
    cols[2].metric("Splits", len(named) if named else "none",
                   help="Images per split: " + ", ".join(f"{k} {v:,}" for k, v in s.splits.items()))  # fmt: skip
    cols[3].metric("Patients", f"{s.n_patients:,}" if s.n_patients else "n/a",
                   help=None if s.n_patients else "The dataset names no patients")  # fmt: skip
    cols[4].metric("Images / patient", f"{s.images_per_patient:.2f}" if s.images_per_patient else "n/a",
                   help=f"At most {s.max_images_per_patient} images for one patient" if s.max_images_per_patient else None)  # fmt: skip
    cols[5].metric("Imbalance", f"{s.imbalance_ratio:.1f} : 1" if s.imbalance_ratio else "n/a",
                   help="Images of the largest class per image of the smallest")  # fmt: skip
    cols[6].metric("Skipped files", f"{s.n_skipped:,}")
    for warning in report.warnings:
        st.warning(warning, icon=":material/warning:")
    if report.skipped:
        with st.expander(f"Skipped files ({len(report.skipped):,}) and why", icon=":material/block:"):
            st.dataframe(pd.DataFrame([{"path": k.path, "reason": k.reason} for k in report.skipped]),
                         hide_index=True, width="stretch")  # fmt: skip


def _balance_section(ds: str) -> None:
    long = _class_counts(ds)
    mode = st.segmented_control(
        "Show", ["count", "percent"], default="count", key="balance_mode", required=True
    )
    left, right = st.columns([3, 2])
    left.plotly_chart(
        figs.class_balance_figure(long, percent=mode == "percent", colors=_colors(ds)), key="balance_chart"
    )
    right.dataframe(ex.class_table(long), width="stretch")
    right.caption("Percent: share of each split's images. Share %: share of all images.")


def _metadata_section(ds: str) -> None:
    index = _index(ds)
    infos = _infos(ds)
    choosable = [c for c in index.columns if c not in ("path",) and infos[c].kind != "empty"]
    meta = {c: i for c, i in infos.items() if c in ex.metadata_columns(index)}
    st.subheader("Distributions", divider="gray")
    c1, c2, c3, c4 = st.columns([4, 1, 1, 1], vertical_alignment="bottom")
    chosen = c1.multiselect("Columns", choosable, default=[c for c in ex.default_columns(index, meta) if c in choosable],
                            key="meta_columns", format_func=lambda c: f"{c} ({infos[c].kind})")  # fmt: skip
    by_label = {"class": "label", "split": "split", "nothing": None}
    by = c2.selectbox("Colour by", list(by_label), key="meta_by")
    bins = c3.number_input("Bins", 5, 100, 20, key="meta_bins")
    top_n = c4.number_input("Top values", 3, 50, 12, key="meta_top")
    percent = st.toggle("Percent of each group", key="meta_percent",
                        help="Compare shapes across classes of different sizes")  # fmt: skip
    if not chosen:
        st.caption("Choose columns to plot.")
    # A dozen classes need a full-width chart each to leave room for the legend.
    per_row = 1 if by_label[by] and len(_colors(ds)) > MANY_CLASSES else 2
    cols = st.columns(per_row)
    for i, column in enumerate(chosen):
        with cols[i % per_row]:
            dist = _distribution(ds, column, by_label[by], int(bins), int(top_n))
            colors = _colors(ds) if by == "class" else SPLIT_COLORS if by == "split" else None
            st.plotly_chart(
                figs.distribution_figure(dist, percent=percent, colors=colors), key=f"meta_chart_{column}"
            )
            notes = []
            if dist.n_missing:
                notes.append(f"{dist.n_missing:,} missing")
            if dist.not_numbers:
                shown = ", ".join(f"{k} ({v})" for k, v in list(dist.not_numbers.items())[:6])
                notes.append(f"not numbers, left out of the bins: {shown}")
            if notes:
                st.caption("; ".join(notes))
    _crosstab_section(ds, choosable, chosen)
    st.subheader("Missing values", divider="gray")
    missing = _missing(ds)
    left, right = st.columns([3, 2])
    left.plotly_chart(figs.missing_figure(missing), key="missing_chart")
    right.dataframe(missing, hide_index=True, width="stretch", height=320)


def _crosstab_section(ds: str, choosable: list[str], chosen: list[str]) -> None:
    st.subheader("Two columns against each other", divider="gray")
    if len(choosable) < 2:
        st.caption("The dataset has fewer than two columns to cross.")
        return
    first = chosen[0] if chosen else choosable[0]
    c1, c2 = st.columns(2)
    row = c1.selectbox("Rows", choosable, index=choosable.index(first), key="cross_rows")
    default_col = "label" if row != "label" else next(c for c in choosable if c != "label")
    column = c2.selectbox("Columns", choosable, index=choosable.index(default_col), key="cross_cols")
    st.plotly_chart(figs.crosstab_figure(_crosstab(ds, row, column)), key="cross_chart")


def _task_section(ds: str, ref: catalog.DatasetRef) -> None:
    from core.data.tasks import FILTER_OPS, RowFilter, SplitPolicy, Task, list_tasks, save_task

    index = _index(ds)
    infos = _infos(ds)
    state = st.session_state
    if state.get("tb_for") != ds:  # a new dataset starts from a blank task
        state.update(tb_for=ds, tb_merges={}, tb_filters=[])
    st.caption("Turn the index into training targets. The class balance below follows every edit; "
               "the Train page trains on a saved task.")  # fmt: skip
    left, right = st.columns([1, 1], gap="large")
    with left:
        label_column = st.selectbox("Label column", ex.label_columns(index, infos), key="tb_label")
        if state.get("tb_merges_for") != label_column:
            state.update(tb_merges_for=label_column, tb_merges={})
        values = _values(ds, label_column)
        raw = values["value"].tolist()
        with st.container(border=True):
            st.markdown("**Merge values into one class**")
            m1, m2 = st.columns([3, 2], vertical_alignment="bottom")
            m1.multiselect("Values", raw, key="tb_merge_values")
            m2.text_input("Into class", key="tb_merge_name", placeholder="pneumonia-related")
            b1, b2 = st.columns(2)
            b1.button("Merge", key="tb_merge_add", on_click=_add_merge, icon=":material/merge:")
            b2.button("Clear merges", key="tb_merge_clear", on_click=lambda: state.update(tb_merges={}))
            if state["tb_merges"]:
                st.dataframe(pd.DataFrame(list(state["tb_merges"].items()), columns=["value", "class"]),
                             hide_index=True, width="stretch")  # fmt: skip
        merged = sorted({state["tb_merges"].get(v, v) for v in raw})
        drop = st.multiselect("Drop values", sorted(set(raw) | set(merged)), key="tb_drop",
                              help="Rows with these labels (or merged classes) are left out")  # fmt: skip
        with st.container(border=True):
            st.markdown("**Keep only rows where**")
            f1, f2, f3 = st.columns([2, 1, 2], vertical_alignment="bottom")
            f1.selectbox("Column", [c for c in index.columns if c != "path"], key="tb_f_col")
            f2.selectbox("Operator", FILTER_OPS, key="tb_f_op")
            f3.text_input("Value", key="tb_f_val", help="For in / not in: values separated by commas")
            b1, b2 = st.columns(2)
            b1.button("Add filter", key="tb_f_add", on_click=_add_filter, icon=":material/filter_alt:")
            b2.button("Clear filters", key="tb_f_clear", on_click=lambda: state.update(tb_filters=[]))
            for f in state["tb_filters"]:
                st.caption(f"`{f['column']} {f['op']} {f.get('value', '')}`")
        has_splits = set(index["split"].astype(str)) & {"train", "val", "test"}
        policy = st.radio("Splits", ["keep", "grouped"], index=0 if has_splits else 1, key="tb_split", horizontal=True,
                          format_func=lambda k: {"keep": "Keep the dataset's splits",
                                                 "grouped": "New split by patient, stratified by class"}[k])  # fmt: skip
        r1, r2, r3, r4 = st.columns(4)
        off = policy == "keep"
        ratios = (r1.number_input("Train %", 1, 98, 70, key="tb_r_train", disabled=off),
                  r2.number_input("Val %", 0, 98, 15, key="tb_r_val", disabled=off),
                  r3.number_input("Test %", 0, 98, 15, key="tb_r_test", disabled=off))  # fmt: skip
        seed = r4.number_input("Seed", 0, 2**31 - 1, 0, key="tb_seed", disabled=off)
        if policy == "grouped" and sum(ratios) != 100:
            st.caption(f"The shares add up to {sum(ratios)}%; they are scaled to 100%.")
    with right, guard("the task preview"):
        total = sum(ratios)
        split = SplitPolicy(policy, tuple(r / total for r in ratios) if total else (1.0, 0.0, 0.0), int(seed))
        filters = tuple(RowFilter(**f) for f in state["tb_filters"])
        task = Task(label_column=label_column, merge=state["tb_merges"], drop_values=tuple(drop), filters=filters,
                    split=split)  # fmt: skip
        preview = _task_preview(ds, json.dumps(task.to_dict(), sort_keys=True))
        # The shortcut probe tab can probe this task (widget state goes when its tab is closed).
        state["tb_current"] = None if preview.error else {"ds": ds, "task": task.to_dict()}
        if preview.error:
            st.error(preview.error, icon=":material/error:")
        else:
            st.markdown(f"**{preview.n_rows:,} images** in {len(preview.table)} classes"
                        + (f" ({preview.n_dropped:,} left out)" if preview.n_dropped else ""))  # fmt: skip
            st.plotly_chart(figs.class_balance_figure(preview.long, colors=_colors(ds)), key="tb_chart")
            st.container(key="tb_table").dataframe(preview.table, width="stretch")
            if policy == "grouped" and _summary(ds).n_patients is None:
                st.caption(
                    "No patient ids: the split groups nothing, so one patient's images may land in two splits."
                )
        s1, s2 = st.columns([3, 1], vertical_alignment="bottom")
        name = s1.text_input("Task name", value=f"{ref.name}-task", key="tb_name")
        if s2.button(
            "Save", key="tb_save", icon=":material/save:", type="primary",
            disabled=bool(preview.error) or not name.strip(),
        ):  # fmt: skip
            path = save_task(Task(**{**_task_fields(task), "name": name.strip()}), _dataset_of(ref))
            st.success(
                f"Saved task **{name.strip()}** ({path.name}); pick it on the Train page.",
                icon=":material/check:",
            )
        saved = list_tasks()
        if saved:
            st.caption("Saved tasks: " + ", ".join(saved))


def _task_fields(task: Any) -> dict[str, Any]:
    return {k: getattr(task, k) for k in task.__dataclass_fields__}


def _dataset_of(ref: catalog.DatasetRef) -> dict[str, Any]:
    return {"path": ref.path, "format": ref.format, "options": dict(ref.options)}


def _add_merge() -> None:
    state = st.session_state
    name = state.get("tb_merge_name", "").strip()
    if name and state.get("tb_merge_values"):
        state["tb_merges"] = {**state["tb_merges"], **{v: name for v in state["tb_merge_values"]}}
        state["tb_merge_values"] = []


def _add_filter() -> None:
    state = st.session_state
    op, raw = state["tb_f_op"], state.get("tb_f_val", "")
    value: Any = [v.strip() for v in raw.split(",") if v.strip()] if op in ("in", "not in") else raw.strip()
    state["tb_filters"] = [*state["tb_filters"], {"column": state["tb_f_col"], "op": op, "value": value}]


# ---------------------------------------------------------------- leakage audit


def _audit_section(ds: str, ref: catalog.DatasetRef) -> None:
    from core.data.audit import NEAR_THRESHOLD

    threshold = int(st.session_state.get("audit_threshold", NEAR_THRESHOLD))
    hashes = _hashes_if_cached(ds)
    report = _audit(ds, hashes is not None, threshold)
    if report.splits:
        _audit_results(ds, report)
    else:
        st.info("This dataset has no train / val / test splits, so nothing leaks between them yet. A split made "
                "later must keep each patient, and each picture's copies, on one side.", icon=":material/info:")  # fmt: skip
    if hashes is None:
        _hash_button(ds)
    elif not report.splits:
        pairs = _within(ds, threshold)
        st.metric("Duplicate or near-duplicate pairs in the dataset", f"{len(pairs):,}")
        if len(pairs):
            _pairs_table(ds, pairs, "within")
    with st.expander("How pictures are compared", icon=":material/help:"):
        st.markdown(
            "Exact duplicates have identical bytes (SHA-256). Near duplicates look alike after re-encoding, "
            "brightening or resizing: their 256-bit perceptual hashes differ in at most *threshold* bits "
            f"(default {NEAR_THRESHOLD}; re-encoded copies measured within 14 bits, distinct radiographs 20 or more "
            "apart)."
        )
        st.number_input("Threshold (bits)", 0, 64, NEAR_THRESHOLD, key="audit_threshold")
    _resplit_form(ds, ref, hashes, threshold)


def _hash_button(ds: str) -> None:
    from core.data.audit import hash_images

    n = len(_index(ds))
    st.caption(f"Pictures are not compared yet: that reads each of the {n:,} images once; the hashes are kept in "
               "the workspace, so the next audit is instant.")  # fmt: skip
    if st.button(
        f"Compare the {n:,} pictures", key="audit_hash", icon=":material/fingerprint:", type="primary"
    ):
        bar, progress = progress_bar("Hashing images")
        hash_images(_index(ds)["path"].tolist(), progress=progress)
        bar.empty()
        _hashes_if_cached.clear()
        st.rerun()


def _audit_results(ds: str, report: Any) -> None:
    images = report.images_checked
    c1, c2, c3 = st.columns(3)
    c1.metric("Patients in several splits", f"{report.patients_in_several_splits:,}")
    c2.metric(
        "Exact duplicates across splits",
        f"{report.duplicate_images_across_splits:,}" if images else "not checked",
    )
    c3.metric(
        "Near duplicates across splits",
        f"{report.near_duplicate_images_across_splits:,}" if images else "not checked",
    )
    table = report.split_pairs.rename(columns={"split_a": "split", "split_b": "and split",
                                               "near_duplicates": "near duplicates"})  # fmt: skip
    if not images:
        table = table.drop(columns=["duplicates", "near duplicates"])
    st.container(key="audit_split_pairs").dataframe(table, hide_index=True, width="stretch")
    if report.failures:
        st.caption(f"{len(report.failures):,} images could not be decoded and were compared by bytes only.")
    if len(report.leaking_patients):
        with st.expander(
            f"Patients in several splits ({len(report.leaking_patients):,})", icon=":material/person:"
        ):
            st.dataframe(report.leaking_patients, hide_index=True, width="stretch")
    if len(report.pairs):
        _pairs_table(ds, report.pairs, "across")
    elif images:
        st.success("No patient and no picture is in two splits.", icon=":material/verified:")


def _pairs_table(ds: str, pairs: pd.DataFrame, key: str) -> None:
    from core.data.thumbs import thumbnails

    pages = ex.n_pages(len(pairs), PAIRS_PER_PAGE)
    page = st.pagination(pages, key=f"pairs_page_{key}") if pages > 1 else 1
    shown = ex.page_of(pairs, page, PAIRS_PER_PAGE)
    thumbs = {t.path: t for t in thumbnails(list(dict.fromkeys([*shown["path_a"], *shown["path_b"]])), 96)}
    patient = _index(ds).set_index("path")["patient_id"].fillna("").astype(str)
    table = pd.DataFrame({
        "kind": shown["kind"].str.replace("_", " "),
        "image a": [_data_url(thumbs[p].data) for p in shown["path_a"]],
        "image b": [_data_url(thumbs[p].data) for p in shown["path_b"]],
        "split a": shown["split_a"].astype(str), "split b": shown["split_b"].astype(str),
        "patient a": patient.reindex(shown["path_a"]).to_numpy(),
        "patient b": patient.reindex(shown["path_b"]).to_numpy(),
        "bits apart": shown["distance"],
        "path a": shown["path_a"], "path b": shown["path_b"],
    })  # fmt: skip
    if not (table["split a"] != "").any():
        table = table.drop(columns=["split a", "split b"])
    st.container(key=f"pairs_{key}").dataframe(table, hide_index=True, width="stretch", row_height=80,
                 column_config={"image a": st.column_config.ImageColumn("image a", width="small"),
                                "image b": st.column_config.ImageColumn("image b", width="small")})  # fmt: skip
    st.caption(
        f"{len(pairs):,} pair{'s' * (len(pairs) != 1)}" + (f"; page {page} of {pages}." if pages > 1 else ".")
    )


def _data_url(data: bytes | None) -> str | None:
    return f"data:image/jpeg;base64,{base64.b64encode(data).decode()}" if data else None


def _resplit_form(ds: str, ref: catalog.DatasetRef, hashes: pd.DataFrame | None, threshold: int) -> None:
    from core.data.audit import copies_to_drop, resplit_task
    from core.data.tasks import save_task

    st.subheader("Save a patient-level split", divider="gray")
    st.caption("Saves a task that splits by patient (no patient in two splits), stratified by class"
               + (", leaving out the extra copies of duplicate pictures." if hashes is not None else
                  ". Compare the pictures first to also leave out duplicate copies."))  # fmt: skip
    c1, c2, c3 = st.columns([3, 1, 1], vertical_alignment="bottom")
    name = c1.text_input("New task name", value=f"{ref.name}-by-patient", key="resplit_name")
    seed = c2.number_input("Seed", 0, 2**31 - 1, 0, key="resplit_seed")
    if c3.button("Save re-split", key="resplit_save", icon=":material/call_split:", type="primary"):
        drop = copies_to_drop(_within(ds, threshold)) if hashes is not None else []
        task = resplit_task(name.strip(), drop, seed=int(seed))
        save_task(task, _dataset_of(ref))
        preview = ex.task_preview(_index(ds), task)
        st.success(f"Saved task **{task.name}**: {preview.n_rows:,} images" +
                   (f", {len(drop):,} duplicate copies left out" if drop else "") + "; pick it on the Train page.",
                   icon=":material/check:")  # fmt: skip


# ---------------------------------------------------------------- gallery


def _gallery_section(ds: str) -> None:
    from core.data.thumbs import thumbnails

    index = _index(ds)
    summary = _summary(ds)
    f1, f2, f3, f4 = st.columns([2, 2, 2, 3])
    classes = f1.multiselect("Classes", list(summary.classes), key="gal_classes")
    splits = f2.multiselect("Splits", list(summary.splits), key="gal_splits")
    columns = [c for c in ex.metadata_columns(index) + list(ex.FILE_COLUMNS) if c in index.columns]
    column = f3.selectbox(
        "Metadata column", [None, *columns], key="gal_column", format_func=lambda c: c or "(any)"
    )
    values = f4.multiselect("Values", ex.column_values(index, column) if column else [], key="gal_values",
                            disabled=column is None)  # fmt: skip
    rows = _gallery_rows(ds, tuple(classes), tuple(splits), column, tuple(values))
    if rows.empty:
        st.info("No image matches these filters.", icon=":material/filter_alt_off:")
        return
    pages = ex.n_pages(len(rows), PER_PAGE)
    grid, detail = st.columns([5, 4], gap="medium")
    with grid:
        page = st.pagination(pages, key="gal_page") if pages > 1 else 1
        shown = ex.page_of(rows, page, PER_PAGE)
        thumbs = thumbnails(shown["path"].tolist())
        for start in range(0, len(shown), GRID_COLUMNS):
            cells = st.columns(GRID_COLUMNS)
            for cell, (i, row), thumb in zip(cells, shown.iloc[start : start + GRID_COLUMNS].iterrows(),
                                             thumbs[start : start + GRID_COLUMNS], strict=False):  # fmt: skip
                with cell:
                    caption = " · ".join(str(v) for v in (row["label"], row["split"]) if v)
                    if thumb.data:
                        st.image(thumb.data, width="stretch")
                    else:
                        st.caption(":material/broken_image: cannot be shown", help=thumb.error)
                    chosen = st.session_state.get("gal_selected") == row["path"]
                    st.button(caption, key=f"gal_open_{i}", width="stretch", help="Open this image",
                              type="primary" if chosen else "tertiary", on_click=_select_image,
                              args=(row["path"],))  # fmt: skip
        st.caption(f"{len(rows):,} images; page {page} of {pages}. Click a caption to open its image.")
    with detail:
        selected = st.session_state.get("gal_selected")
        if selected not in set(index["path"]):
            st.caption("Click an image to see it full size with its metadata, DICOM header and lesion boxes.")
            return
        with guard("the image view"):
            _image_detail(ds, selected)


def _select_image(path: str) -> None:
    st.session_state["gal_selected"] = path


def _image_detail(ds: str, path: str) -> None:
    index = _index(ds)
    row = index[index["path"] == path].iloc[0]
    boxes = _report_for(ds).boxes
    n_boxes = int((boxes["path"] == path).sum())
    caption = " · ".join(str(v) for v in (os.path.basename(path), row["label"], row["split"]) if v)
    caption += f" · {n_boxes} lesion box{'es' * (n_boxes > 1)} drawn" if n_boxes else ""
    st.image(_full_image(ds, path), caption=caption, width="stretch")
    narrow = {"field": st.column_config.TextColumn(width="small")}
    with st.expander("Metadata", expanded=True, icon=":material/list:"):
        st.container(key="gal_meta").dataframe(ex.row_table(row), hide_index=True, width="stretch",
                                               column_config=narrow)  # fmt: skip
    if str(row.get("file_format", "")) == "DICOM":
        show_phi = st.toggle("Show identifying fields (names, dates of birth, IDs)", key="gal_phi",
                             help="Off by default: identifying DICOM fields are masked as •••")  # fmt: skip
        with st.expander("DICOM header", expanded=True, icon=":material/description:"):
            st.container(key="gal_header").dataframe(
                _dicom_header(path, show_phi), hide_index=True, width="stretch",
                column_config={"tag": st.column_config.TextColumn(width="small")},
            )  # fmt: skip


# ---------------------------------------------------------------- boxes, intensity


def _boxes_section(ds: str) -> None:
    stats = _box_stats(ds)
    if not stats.n_boxes:
        st.info("No lesion boxes in this dataset.", icon=":material/crop_free:")
        return
    c1, c2, c3 = st.columns(3)
    c1.metric("Boxes", f"{stats.n_boxes:,}")
    c2.metric("Images with boxes", f"{stats.n_images_with_boxes:,}")
    c3.metric("Boxes per boxed image", f"{stats.n_boxes / max(stats.n_images_with_boxes, 1):.2f}")
    left, right = st.columns(2)
    left.plotly_chart(figs.box_centres_figure(stats.centres), key="boxes_centres")
    right.plotly_chart(
        figs.box_sizes_figure(ex.box_size_table(stats), stats.classes, colors=_colors(ds)), key="boxes_sizes"
    )
    if stats.n_without_size:
        st.caption(f"{stats.n_without_size:,} boxes belong to images of unknown size and are not drawn.")


def _intensity_section(ds: str) -> None:
    index = _index(ds)
    has_train = bool((index["split"].astype(str) == "train").any())
    st.caption(
        "Mean and standard deviation of pixel values (0 = black, 1 = white) by streaming sums over a sample of "
        + ("the train split" if has_train else "the images")
        + ", decoded and resized as training does. "
        "Train computes the same statistics on its train split when a run's normalisation is **dataset** "
        "(`normalize: dataset`) instead of ImageNet's."
    )
    c1, c2 = st.columns([1, 3], vertical_alignment="bottom")
    n = int(c1.number_input("Images to sample", 10, max(10, len(index)), min(500, max(10, len(index))), step=50,
                            key="int_n"))  # fmt: skip
    paths, groups = _intensity_sample(ds, n)
    stats = ex.load_intensity(ex.intensity_cache_key(paths, 224))
    if stats is None:
        if not c2.button(f"Read {len(paths):,} images", key="int_run", icon=":material/calculate:"):
            return
        bar, progress = progress_bar("Reading pixels")
        ex.intensity_stats(paths, groups, size=224, progress=progress)
        bar.empty()
        st.rerun()  # the result is cached in the workspace; show it without the button
    m1, m2, m3 = st.columns(3)
    m1.metric("Mean", f"{stats.mean:.4f}")
    m2.metric("Standard deviation", f"{stats.std:.4f}")
    m3.metric(
        "Images read",
        f"{stats.n_images:,}",
        help=f"{stats.n_failed} could not be decoded" if stats.n_failed else None,
    )
    left, right = st.columns(2)
    colors = _colors(ds)
    left.plotly_chart(figs.intensity_figure(stats.classes, stats.histogram, colors=colors), key="int_hist")
    right.plotly_chart(
        figs.image_means_figure(stats.image_means, stats.classes, colors=colors), key="int_means"
    )


# ---------------------------------------------------------------- shortcut probe


@st.cache_resource(show_spinner=False)
def _probe_results() -> dict[tuple[str, str], Any]:
    """Probe results by (dataset key, task JSON), shared by the sessions; the dataset key
    changes with a rescan, so a stale result is never shown."""
    return {}


def _probe_labels(ds: str, ref: catalog.DatasetRef) -> dict[str, dict[str, Any] | None]:
    """What the label is: the dataset's own, the task being built, or a saved task of it."""
    from core.data.tasks import list_tasks, load_task
    from core.errors import ChestLabError

    out: dict[str, dict[str, Any] | None] = {"The dataset's labels": None}
    current = st.session_state.get("tb_current")
    if current and current["ds"] == ds:
        out["The task in the task builder (unsaved)"] = current["task"]
    for name in list_tasks():
        try:
            task, dataset = load_task(name)
        except ChestLabError:
            continue
        if os.path.abspath(str(dataset.get("path", ""))) == os.path.abspath(ref.path):
            out[f"Saved task: {name}"] = task.to_dict()
    return out


def _probe_section(ds: str, ref: catalog.DatasetRef) -> None:
    from core.evaluate.probe import FLAG_AUC, probe_dataset

    st.caption(
        "Can the label be predicted **without looking at the lung**? Two cross-validated models try, one from "
        "the metadata columns alone (age, sex, view, hospital...), one from the file properties alone (format, "
        "colour mode, bit depth, width, height, file size). Folds keep each patient's images together. An AUC "
        f"above {FLAG_AUC} means a classifier trained on the pixels can learn the same shortcut, and its test "
        "score will not hold on data from elsewhere."
    )
    labels = _probe_labels(ds, ref)
    c = st.columns([4, 1], vertical_alignment="bottom")
    choice = c[0].selectbox("Label to predict", list(labels), key="probe_label")
    task = labels.get(choice)
    key = (ds, json.dumps(task, sort_keys=True) if task else "")
    results = _probe_results()
    if c[1].button("Run the probe", key="probe_run", icon=":material/troubleshoot:", type="primary",
                   width="stretch"):  # fmt: skip
        bar, progress = progress_bar("Shortcut probe")
        result = probe_dataset(ref.path, ref.format, options=dict(ref.options), task=task, progress=progress)
        bar.empty()
        results[key] = result
        while len(results) > PROBE_RESULTS_KEPT:
            results.pop(next(iter(results)))
    result = results.get(key)
    if result is None:
        st.caption("Press **Run the probe**: a few seconds; the result is kept for this dataset and label.")
        return
    _probe_result(result)


def _probe_result(result: Any) -> None:
    m = st.columns(3)
    for col, side, name, what in (
        (m[0], result.metadata, "Metadata alone", "the metadata columns"),
        (m[1], result.file_properties, "File properties alone", "the file properties"),
    ):
        col.metric(f"{name}: AUC", f"{side.auc:.2f}" if side.auc is not None else "n/a",
                   help=f"Cross-validated ROC-AUC of a model that sees only {what} ({len(side.features)} "
                   f"columns: {', '.join(side.features) or 'none'}). 0.5 = no better than chance.")  # fmt: skip
    unit = f"{result.n_groups:,} patients" if result.grouped_by_patient else "images"
    m[2].metric(
        "Images probed", f"{result.n_images:,}", help=f"{result.n_folds}-fold cross-validation by {unit}."
    )
    if result.flagged:
        st.warning(_probe_headline(result), icon=":material/warning:")
    else:
        st.success(
            f"No shortcut found: the label cannot be predicted from the metadata ({_side_text(result.metadata)}) "
            f"nor from the file properties ({_side_text(result.file_properties)}). The pixels are what a model "
            "can learn from here.",
            icon=":material/verified:",
        )
    top = result.top_features
    if top:
        st.markdown("**The columns that carry the label**")
        st.dataframe(pd.DataFrame([{
            "column": s.feature, "kind": s.probe.replace("_", " "), "AUC alone": s.auc_alone,
            "AUC drop when shuffled": s.importance} for s in top]), hide_index=True,
            column_config={k: st.column_config.NumberColumn(k, format="%.3f")
                           for k in ("AUC alone", "AUC drop when shuffled")})  # fmt: skip
        st.caption(
            "AUC alone: the column by itself, cross-validated. AUC drop: how much the model loses when the "
            "column is shuffled (small for a column another one duplicates, such as file size and format)."
        )
    for note in (result.metadata.note, result.file_properties.note):
        if note:
            st.caption(note)
    if result.excluded:
        with st.expander(f"Columns left out ({len(result.excluded)})", icon=":material/block:"):
            st.dataframe(
                pd.DataFrame(list(result.excluded.items()), columns=["column", "why"]), hide_index=True
            )
    st.caption(result.summary)


def _auc(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _side_text(side: Any) -> str:
    if side.auc is not None:
        return f"AUC {side.auc:.2f}"
    return "no column varies" if not side.features else "too few images to tell"


def _probe_headline(result: Any) -> str:
    """The shortcut in one sentence: which column predicts the label, and what a model learns."""
    flagged = [s for s in (result.file_properties, result.metadata) if s.flagged]
    side = max(flagged, key=lambda s: s.auc or 0.0)
    files = side.name == "file_properties"
    tops = [s for s in result.top_features if s.probe == side.name]
    if tops and tops[0].auc_alone is not None:
        top = tops[0]
        words = FEATURE_WORDS.get(top.feature, top.feature) if files else f"column {top.feature!r}"
        learns = "the file" if files else f"the {top.feature}"
        text = (
            f"The {words} alone predicts the label (AUC {top.auc_alone:.2f}): a model can learn {learns}, "
            "not the lung."
        )
    else:
        what = "file properties" if files else "metadata"
        text = f"The {what} predict the label (AUC {_auc(side.auc)}): a model can learn them, not the lung."
    classes = sorted(set(side.flagged_classes))
    if classes:
        text += f" Class {', '.join(classes)} is told apart from the rest by them."
    return text + " Re-save the images alike, or check on data from elsewhere before trusting a score."


# ---------------------------------------------------------------- the page


def main() -> None:
    st.title("Explore")
    added = st.session_state.pop("explore_added", None)
    if added:
        st.toast(added, icon=":material/check_circle:")
    ref, ds = None, None
    with guard("choosing the dataset"):
        ref = _pick_dataset()
        if ref is not None:
            ds = _dataset_key(ref)
            _summary_section(ds)
    if ref is None or ds is None:
        return
    tabs = st.tabs(list(TABS.values()), key="explore_tab", on_change="rerun")
    sections = {
        "balance": lambda: _balance_section(ds),
        "metadata": lambda: _metadata_section(ds),
        "task": lambda: _task_section(ds, ref),
        "audit": lambda: _audit_section(ds, ref),
        "gallery": lambda: _gallery_section(ds),
        "boxes": lambda: _boxes_section(ds),
        "intensity": lambda: _intensity_section(ds),
        "probe": lambda: _probe_section(ds, ref),
    }
    for tab, (name, render) in zip(tabs, sections.items(), strict=True):
        if tab.open:
            with tab, guard(f"the {name} tab"):
                render()


main()
