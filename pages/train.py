"""Train: launch runs in the background and watch them.

Thin: the form is built from the registries and turns into ``RunConfig``s that
``submit_run`` queues (a worker process trains them; nothing trains in the app). The runs
table reads the store. Live parts are fragments that refresh every 2 s only while a run is
queued or running; the choices the class-weight preview depends on sit outside the form so
the preview follows them, everything else is batched in an ``st.form``.

Two gates sit before Launch: the leakage check (``core.evaluate.leakage``: a task whose
splits share patients or identical images shows what leaks and needs an explicit "train
anyway"; the run then records what leaked), and the launcher's reach (a Ray head that does
not answer is a warning with its reason, never an exception).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any

import streamlit as st

from core import config as cfg
from core.errors import ChestLabError, ConfigError
from core.runs import views
from core.runs.store import RunRecord, RunStatus
from pages import run_widgets as rw
from pages.common import guard, progress_bar

RUNS_KEY = "train_runs"
SOURCE_HELP = {
    "task": "a saved task (Explore > Task builder: merged classes, filters, splits by patient)",
    "dataset": "a registered dataset, its labels and splits as they are",
}
AUTO_HASH_IMAGES = 500  # tasks this small have their pictures compared at once (a second or two)
CONFIRM_LEAKAGE = "Train anyway: I understand the metrics will be optimistic"
PRETRAINED = {
    "imagenet": "ImageNet (torchvision)",
    "none": "None: random init, from scratch",
    "file": "A weights file",
}


# ---------------------------------------------------------------- cached reads


@st.cache_data(ttl=60, show_spinner=False)
def _devices(workspace: str) -> list[tuple[str, str, str]]:
    """(name, label, runs at once) of the devices runs can use, as the workspace's launcher
    sees them (as the worker counts them: a Ray cluster's CPUs and GPUs); probing GPUs takes
    seconds, hence the cache. Raises ConfigError when the launcher cannot be asked."""
    from pathlib import Path

    from core.runs import worker

    settings = worker.load_settings(workspace)
    devices = worker.list_devices(workspace)
    try:
        default = getattr(worker.LAUNCHERS.get(worker.launcher_name(settings)), "default_slots", 1)
    except ValueError:
        default = 1
    where = str(Path(workspace) / worker.SETTINGS_NAME)
    slots = worker.slot_counts(settings, devices, where, default)
    out = []
    for d in devices:
        label = d.label
        if d.free_memory is not None and d.total_memory:
            label += f", {d.free_memory / 2**30:.1f} of {d.total_memory / 2**30:.0f} GB free"
        out.append((d.name, label, str(slots[d.name])))
    return out


@st.cache_data(ttl=10, show_spinner=False)
def _ray_status(workspace: str) -> dict[str, Any]:
    """The Ray cluster's nodes, CPUs, GPUs and jobs (``cluster_status``: never raises)."""
    from core.runs import cluster

    return cluster.cluster_status(workspace)


def _launcher_kind(workspace: str) -> str:
    from core.runs import worker

    return worker.launcher_name(worker.load_settings(workspace))


def _device_choices(workspace: str) -> tuple[list[tuple[str, str, str]], str]:
    """The devices to offer and, when the launcher cannot list them (a Ray head that does not
    answer), why: then only the CPU is offered and queued runs wait for the head."""
    if _launcher_kind(workspace) == "ray":
        status = _ray_status(workspace)
        if not status["reachable"]:
            return [("cpu", "CPU on the Ray cluster (unreachable now)", "?")], status["error"]
    try:
        return _devices(workspace), ""
    except ConfigError as exc:
        return [("cpu", "CPU", "?")], str(exc)


@st.cache_data(ttl=300, max_entries=16, show_spinner="Reading the dataset index and applying the task...")
def _split_counts(source_json: str) -> tuple[list[str], list[int], dict[str, int]]:
    """Classes, train images per class and images per split, as training will see them
    (the same scan and task code; images that fail to decode are skipped later)."""
    from core.train.data import load_task_table

    table, classes = load_task_table(cfg.RunConfig(**json.loads(source_json)))
    train = table.loc[table["split"] == "train", "target"]
    counts = [int((train == i).sum()) for i in range(len(classes))]
    sizes = {str(k): int(v) for k, v in table["split"].value_counts().items()}
    return classes, counts, sizes


# ---------------------------------------------------------------- what to train on


def _source() -> dict[str, Any] | None:
    from core.data import catalog
    from core.data.tasks import list_tasks, load_task

    tasks, datasets = list_tasks(), {d.name: d for d in catalog.list_datasets()}
    if not tasks and not datasets:
        st.info(
            "No dataset yet. Add one on the Explore page (or restart the app to get the demo).",
            icon=":material/info:",
        )
        rw.page_link("pages/explore.py", "Explore", ":material/query_stats:")
        return None
    kinds = (["task"] if tasks else []) + (["dataset"] if datasets else [])
    kind = st.radio("Train on", kinds, format_func=SOURCE_HELP.get, key="tr_kind", horizontal=True)
    if kind == "task":
        name = st.selectbox("Task", tasks, key="tr_task")
        task, ds = load_task(name)
        return dict(
            data=ds["path"],
            format=ds.get("format", "auto"),
            format_options=dict(ds.get("options", {})),
            task=task.to_dict(),
            task_name=task.name,
        )
    name = st.selectbox(
        "Dataset",
        list(datasets),
        key="tr_dataset",
        help="The label column as it is; the given splits, or 70/15/15 by patient when there are none.",
    )
    ref = datasets[name]
    return dict(data=ref.path, format=ref.format, format_options=dict(ref.options), task={}, task_name="")


def _show_counts(classes: list[str], sizes: dict[str, int]) -> None:
    parts = [f"{sizes.get(s, 0):,} {s}" for s in ("train", "val", "test")]
    st.caption(f"{len(classes)} classes ({', '.join(classes)}); images: {', '.join(parts)}.")
    if not sizes.get("val"):
        st.warning(
            "This task has no val split: training needs one to pick the best epoch. "
            "Use a split by patient in the task builder.",
            icon=":material/warning:",
        )


# ---------------------------------------------------------------- leakage gate


@st.cache_data(
    ttl=300, max_entries=16, show_spinner="Checking the splits for shared patients and pictures..."
)
def _leakage(source_json: str, generation: int) -> Any:
    """The task's leakage report: patient ids always; pictures when their hashes are all
    cached (Explore's audit, or the button below), or at once for a small task.
    ``generation`` changes when pictures were just hashed here."""
    from core.evaluate.leakage import check_leakage

    source = json.loads(source_json)
    report = check_leakage(source, images="cached")
    if not report.images_checked and report.n_images <= AUTO_HASH_IMAGES:
        report = check_leakage(source, images=True)
    return report


def _leakage_gate(source: dict[str, Any]) -> Any:
    """Show what leaks between the task's splits; returns the report (None: unknown)."""
    report = _leakage(json.dumps(source, sort_keys=True), st.session_state.get("tr_hash_generation", 0))
    if report.leaks:
        st.warning(
            f"**This task leaks between its splits**: {_what_leaks(report)}. A model scored on patients or "
            "pictures it trained on looks better than it is.",
            icon=":material/warning:",
        )
        with st.expander("What leaks", icon=":material/policy:"):
            _leak_details(report, source)
        st.caption(
            "Fix it on the Explore page (Leakage audit > Save a patient-level split) and train on that task, "
            "or confirm next to Launch to train anyway (the run records what leaked)."
        )
    elif not report.images_checked:
        st.caption(
            f":material/policy: Leakage: no patient is in two splits; the {report.n_images:,} pictures are not "
            "compared yet (a copy of one image in two splits leaks too)."
        )
        if st.button(
            f"Compare the {report.n_images:,} pictures", key="tr_hash", icon=":material/fingerprint:"
        ):
            _hash_pictures(source)
    else:
        st.caption(f":material/verified: Leakage: {report.summary}.")
    return report


def _what_leaks(report: Any) -> str:
    return report.summary.removeprefix("leakage: ")


def _leak_details(report: Any, source: dict[str, Any]) -> None:
    import pandas as pd

    pairs = pd.DataFrame(report.split_pairs)
    if not pairs.empty:
        pairs = pairs[(pairs["patients"] > 0) | (pairs["duplicates"] > 0)]
        st.dataframe(pairs.rename(columns={"split_a": "split", "split_b": "and split",
                                           "near_duplicates": "near duplicates"}), hide_index=True)  # fmt: skip
    if report.examples:
        root = str(source.get("data", ""))

        def short(path: Any) -> str:
            path = str(path or "")
            return os.path.relpath(path, root) if root and path.startswith(root) else path

        examples = pd.DataFrame(
            {
                "kind": [str(e.get("kind", "")).replace("_", " ") for e in report.examples],
                "image": [f"{e.get('split_a')}: {short(e.get('path_a'))}" for e in report.examples],
                "and image": [f"{e.get('split_b')}: {short(e.get('path_b'))}" for e in report.examples],
            }
        )
        st.caption(f"The first {len(examples)} pairs found (paths under {root}):")
        st.dataframe(examples, hide_index=True)


def _hash_pictures(source: dict[str, Any]) -> None:
    from core.evaluate.leakage import check_leakage

    bar, progress = progress_bar("Comparing the pictures")
    check_leakage(source, images=True, progress=progress)  # the hashes stay in the workspace cache
    bar.empty()
    st.session_state["tr_hash_generation"] = st.session_state.get("tr_hash_generation", 0) + 1
    st.rerun(scope="fragment")


# ---------------------------------------------------------------- model


def _model(sweep: bool) -> tuple[list[str], str]:
    import models

    names = models.list_archs()
    if sweep:
        archs = st.multiselect("Architectures", names, default=["resnet18"], key="tr_archs")
    else:
        archs = [st.selectbox("Architecture", names, index=names.index("resnet18"), key="tr_arch")]
    for a in archs:
        st.caption(f"**{a}**: {models.get_arch(a).description}")
    # ImageNet unless the user says otherwise (as in every notebook); where the weights are
    # not cached the warning below says where they come from: from scratch is only ever chosen.
    choice = st.radio(
        "Pretrained weights",
        list(PRETRAINED),
        index=0,
        format_func=PRETRAINED.get,
        key="tr_pretrained",
        horizontal=True,
        help="ImageNet weights come from the torch hub cache (downloaded on first use where there is "
        "a network). A weights file is a state_dict saved with torch.save.",
    )
    if choice == "imagenet":
        for s in (models.pretrained_status(a) for a in archs):
            if s.available:
                st.caption(f":material/check_circle: {s.message}")
            else:
                st.warning(s.message, icon=":material/download:")
        return archs, "imagenet"
    if choice == "none":
        st.caption("Every weight starts random: expect slower learning than from ImageNet weights.")
        return archs, "none"
    path = st.text_input("Weights file", key="tr_weights_file", placeholder="/path/to/weights.pt")
    if path and not os.path.isfile(os.path.expanduser(path)):
        st.error(f"{path}: no such file", icon=":material/error:")
    return archs, os.path.abspath(os.path.expanduser(path)) if path else ""


# ---------------------------------------------------------------- imbalance strategy


def _param_widget(owner: str, key: str, spec: Any, wkey: str) -> Any:
    label = f"{owner} · {key}"
    if spec.kind == "choice":
        return st.selectbox(label, list(spec.choices or ()), key=wkey, help=spec.help)
    if spec.choices is not None or spec.kind == "floats":
        # "auto", "none" or numbers: typed as text, checked by the registry
        text = st.text_input(label, value=str(spec.default), key=wkey, help=spec.help)
        return _parse_param(text, spec)
    if spec.kind == "int":
        return st.number_input(
            label,
            min_value=int(spec.min) if spec.min is not None else None,
            value=spec.default,
            step=1,
            key=wkey,
            help=spec.help,
            placeholder="default",
        )
    return st.number_input(
        label,
        min_value=spec.min,
        max_value=spec.max,
        value=float(spec.default),
        step=_step(float(spec.default)),
        format="%g",
        key=wkey,
        help=spec.help,
    )


def _step(default: float) -> float:
    return 0.001 if 0.9 <= default < 1 else 0.05 if default < 1 else 0.5


def _parse_param(text: str, spec: Any) -> Any:
    text = text.strip()
    if spec.choices and text in spec.choices:
        return text
    try:
        if spec.kind == "floats":
            return [float(v) for v in text.replace(";", ",").split(",") if v.strip()]
        return float(text)
    except ValueError:
        return text  # the registry's check names the parameter and what it accepts


def _strategies(sweep: bool) -> tuple[dict[str, dict], dict[str, dict]]:
    from core.train import losses, samplers

    loss_names, sampler_names = losses.list_losses(), samplers.list_samplers()
    left, right = st.columns(2)
    if sweep:
        chosen_losses = left.multiselect("Losses", loss_names, default=["weighted_ce"], key="tr_losses")
        chosen_samplers = right.multiselect("Samplers", sampler_names, default=["none"], key="tr_samplers")
    else:
        chosen_losses = [
            left.selectbox("Loss", loss_names, index=loss_names.index("weighted_ce"), key="tr_loss")
        ]
        chosen_samplers = [right.selectbox("Sampler", sampler_names, key="tr_sampler")]
    loss_params = {n: _params(left, "loss", losses.get_loss(n)) for n in chosen_losses}
    sampler_params = {n: _params(right, "sampler", samplers.get_sampler(n)) for n in chosen_samplers}
    return loss_params, sampler_params


def _params(column: Any, kind: str, spec: Any) -> dict[str, Any]:
    with column:
        st.caption(f"**{spec.name}**: {spec.description}")
        values = {
            k: _param_widget(spec.name, k, p, f"tr_{kind}_{spec.name}_{k}") for k, p in spec.params.items()
        }
    return {k: v for k, v in values.items() if v is not None}


def _preview(source: dict[str, Any], loss_params: dict, sampler_params: dict) -> list[str]:
    """The class weights / sampling each strategy will use here; returns the errors."""
    classes, counts, sizes = _split_counts(json.dumps(source, sort_keys=True))
    _show_counts(classes, sizes)
    table, errors = views.strategy_preview(classes, counts, loss_params, sampler_params)
    number = {
        c: st.column_config.NumberColumn(c, format="%.3g") for c in table.columns if c.startswith("weight")
    }
    st.dataframe(table, hide_index=True, column_config=number, width="content")
    st.caption(
        "weight: how much one image of the class counts in the loss (1 = plain cross-entropy). "
        "per epoch: images of the class a sampler draws in one epoch (expected)."
    )
    for e in errors:
        st.error(e, icon=":material/error:")
    return errors


# ---------------------------------------------------------------- the form


def _cpu_only(devices: list[tuple[str, str, str]]) -> bool:
    return all(name == "cpu" for name, _, _ in devices)


HELP = {
    "img_size": "Square input; on a CPU 96-128 px trains in minutes, 224 px about 4x slower.",
    "in_channels": "1 sums the ImageNet stem over RGB; 3 feeds the grey image three times.",
    "warmup_epochs": "Linear warm-up (one-cycle: its rising phase; 0 = a quarter of the run).",
    "step_size": "Epochs between learning-rate drops; only the step schedule uses it.",
    "gamma": "Factor of each drop; only the step schedule uses it.",
    "freeze": "none: train everything; backbone: only the head trains; epochs: the head only for the "
    "freeze epochs, then everything.",
    "normalize": "imagenet: ImageNet's mean and std; dataset: the training split's own.",
    "precision": "auto: bf16 where the hardware has it, else fp32; fp16 on CUDA only.",
    "early_stopping": "Stop after this many epochs without a better val metric; 0 = off.",
    "monitor": "The val metric that picks the best checkpoint.",
    "allow_leakage": "The run is marked as allowed to leak and keeps what leaked in its info; its val and "
    "test metrics are not to be trusted.",
}


def _number(col: Any, field: str, label: str, lo: float, hi: float, value: float, **kw: Any) -> Any:
    return col.number_input(label, lo, hi, value, key=f"tr_{field}", help=HELP.get(field), **kw)


def _choice(col: Any, field: str, label: str, options: list[Any], value: Any, **kw: Any) -> Any:
    options = list(options)
    kw.setdefault("help", HELP.get(field))
    return col.selectbox(label, options, index=options.index(value), key=f"tr_{field}", **kw)


def _form_fields(devices: list[tuple[str, str, str]], sweep: bool) -> dict[str, Any]:
    """The batched part of the form; returns RunConfig fields (plus ``_seeds``)."""
    from core.train import augment, optim

    d = cfg.RunConfig()
    cpu = _cpu_only(devices)  # smaller defaults, so a first run on a laptop ends in minutes
    f: dict[str, Any] = {}
    c = st.columns(4)
    f["img_size"] = _number(
        c[0], "img_size", "Image size (px)", 32, 1024, 128 if cpu else d.img_size, step=16
    )
    f["in_channels"] = _choice(
        c[1],
        "in_channels",
        "Input channels",
        [1, 3],
        d.in_channels,
        format_func=lambda n: "1 (grey)" if n == 1 else "3 (grey repeated)",
    )
    f["epochs"] = _number(c[2], "epochs", "Epochs", 1, 10_000, 5 if cpu else d.epochs)
    f["batch_size"] = _number(c[3], "batch_size", "Batch size", 1, 4096, d.batch_size)
    c = st.columns(4)
    f["optimizer"] = _choice(
        c[0],
        "optimizer",
        "Optimiser",
        optim.list_optimizers(),
        d.optimizer,
        help=_described(optim.list_optimizers(), optim.get_optimizer),
    )
    f["lr"] = _number(c[1], "lr", "Learning rate", 1e-7, 10.0, d.lr, format="%g", step=1e-4)
    f["weight_decay"] = _number(
        c[2], "weight_decay", "Weight decay", 0.0, 1.0, d.weight_decay, format="%g", step=1e-4
    )
    f["schedule"] = _choice(
        c[3],
        "schedule",
        "Schedule",
        optim.list_schedules(),
        d.schedule,
        help=_described(optim.list_schedules(), optim.get_schedule),
    )
    c = st.columns(4)
    f["warmup_epochs"] = _number(
        c[0], "warmup_epochs", "Warm-up epochs", 0.0, 100.0, d.warmup_epochs, step=0.5
    )
    f["step_size"] = _number(c[1], "step_size", "Step size (step schedule)", 1, 10_000, d.step_size)
    f["gamma"] = _number(c[2], "gamma", "Gamma (step schedule)", 0.001, 1.0, d.gamma, format="%g", step=0.05)
    f["freeze"] = _choice(c[3], "freeze", "Freeze", cfg.FREEZE_POLICIES, d.freeze)
    c = st.columns(4)
    f["freeze_epochs"] = _number(
        c[0], "freeze_epochs", "Freeze epochs (epochs policy)", 0, 10_000, d.freeze_epochs
    )
    f["augment"] = _choice(
        c[1],
        "augment",
        "Augmentation",
        augment.list_augments(),
        d.augment,
        help=_described(augment.list_augments(), augment.get_augment),
    )
    f["normalize"] = _choice(c[2], "normalize", "Normalisation", cfg.NORMALIZATIONS, d.normalize)
    f["precision"] = _choice(c[3], "precision", "Precision", cfg.PRECISIONS, d.precision)
    c = st.columns(4)
    labels = {n: f"{n}: {label} (runs at once: {slots})" for n, label, slots in devices}
    labels["auto"] = "auto: a free GPU, else the CPU when there is no GPU"
    f["device"] = _choice(
        c[0],
        "device",
        "Device",
        ["auto", *(n for n, _, _ in devices)],
        "auto",
        format_func=lambda n: labels.get(n, n),
    )
    f["early_stopping"] = _number(
        c[1], "early_stopping", "Early stopping (patience)", 0, 10_000, d.early_stopping
    )
    f["monitor"] = _choice(c[2], "monitor", "Monitor (val)", cfg.MONITORS, d.monitor)
    if not sweep:
        f["_seeds"] = [int(_number(c[3], "seed", "Seed", 0, 2**31 - 1, d.seed))]
    c = st.columns(2)
    f["name"] = c[0].text_input(
        "Name prefix" if sweep else "Name", placeholder="(default: arch-loss-sampler)", key="tr_name"
    )
    tags = c[1].text_input("Tags", placeholder="comma separated, e.g. baseline, 128px", key="tr_tags")
    f["tags"] = [t.strip() for t in tags.split(",") if t.strip()]
    with st.expander("Advanced"):
        c = st.columns(3)
        f["momentum"] = _number(
            c[0], "momentum", "Momentum (SGD)", 0.0, 0.999, d.momentum, format="%g", step=0.01
        )
        f["grad_clip"] = _number(
            c[1], "grad_clip", "Gradient clipping (0 = off)", 0.0, 1e6, d.grad_clip, format="%g"
        )
        f["nesterov"] = c[2].checkbox("Nesterov (SGD)", d.nesterov, key="tr_nesterov")
    return f


def _described(names: list[str], get: Any) -> str:
    return "  \n".join(f"**{n}**: {get(n).description}" for n in names)


def _launcher() -> None:
    with guard("the new-run form"):
        _launcher_body()


def _launcher_body() -> None:
    devices, _ = _device_choices(str(_workspace()))  # a launcher that cannot answer: warned above
    source = _source()
    if source is None:
        return
    sweep = st.toggle(
        "Sweep: queue every combination of several architectures, strategies and seeds", key="tr_sweep"
    )
    st.markdown("##### Model")
    archs, pretrained = _model(sweep)
    st.markdown("##### Class imbalance")
    loss_params, sampler_params = _strategies(sweep)
    seeds = [0]
    if sweep:
        seeds = []  # a typo in the seeds queues nothing (the button is disabled) rather than seed 0
        with guard("the seeds"):
            seeds = views.parse_seeds(st.text_input("Seeds", "0", key="tr_seeds", help="e.g. 0, 1, 2 or 0-4"))
    errors = ["the dataset could not be read (its error is shown above)"]
    with guard("the class weight preview"):
        errors = _preview(source, loss_params, sampler_params)
    leak = None
    with guard("the leakage check"):
        leak = _leakage_gate(source)
    n = len(archs) * len(loss_params) * len(sampler_params) * len(seeds)
    st.markdown("##### Training")
    with st.form("train_form", border=False):
        fields = _form_fields(devices, sweep)
        what = (
            (
                f"{len(archs)} architecture(s) × {len(loss_params)} loss(es) × {len(sampler_params)} sampler(s) "
                f"× {len(seeds)} seed(s)"
            )
            if sweep
            else ""
        )
        label = f"Launch {n} runs" if n != 1 else "Launch 1 run"
        if sweep:
            st.caption(f"Will queue {n} run(s): {what}.")
        confirmed = False
        if leak is not None and leak.leaks:
            confirmed = st.checkbox(CONFIRM_LEAKAGE, key="tr_allow_leakage", help=HELP["allow_leakage"])
        submitted = st.form_submit_button(
            label, type="primary", icon=":material/rocket_launch:", disabled=n == 0
        )
    if submitted:
        fields["allow_leakage"] = bool(leak is not None and leak.leaks)
        if fields["allow_leakage"] and not confirmed:
            st.error(
                f"Not launched: {_what_leaks(leak)}. Tick **{CONFIRM_LEAKAGE}** to launch, or fix the task's splits.",
                icon=":material/block:",
            )
            return
        _submit(source, archs, pretrained, loss_params, sampler_params, fields, seeds, errors, leak)


def _submit(
    source: dict,
    archs: list[str],
    pretrained: str,
    loss_params: dict,
    sampler_params: dict,
    fields: dict[str, Any],
    seeds: list[int],
    errors: list[str],
    leak: Any = None,
) -> None:
    from core.evaluate.leakage import record_leakage
    from core.runs import submit

    seeds = fields.pop("_seeds", seeds)
    try:
        if errors:
            raise ConfigError(f"fix the class imbalance strategy first: {errors[0]}")
        if pretrained == "":
            raise ConfigError("pretrained: name a weights file, or choose ImageNet or none")
        base = {**source, **fields, "pretrained": pretrained}
        configs = views.sweep_configs(
            base, archs, list(loss_params), list(sampler_params), seeds, loss_params, sampler_params
        )
        if len(configs) > 1:
            tag = time.strftime("sweep-%Y%m%d-%H%M%S")
            configs = [c.replace(tags=(*c.tags, tag)) for c in configs]
        records = [submit.submit_run(c) for c in configs]
        if leak is not None and leak.leaks:
            allowed = dataclasses.replace(leak, allowed=True)
            for rec in records:
                record_leakage(rec.id, allowed, store=rw.run_store())
    except ChestLabError as exc:
        st.error(str(exc), icon=":material/error:")
        return
    first = records[0]
    if len(records) == 1:
        rw.flash(f"Queued run {first.name} ({first.id}).", ":material/rocket_launch:")
    else:
        rw.flash(
            f"Queued {len(records)} runs ({records[0].id} ... {records[-1].id}).", ":material/rocket_launch:"
        )
    rw.select_next_time(RUNS_KEY, [first.id])
    st.rerun()


# ---------------------------------------------------------------- the runs


def _workspace():
    from core.workspace import workspace_root

    return workspace_root()


def _worker_line(runs: list[RunRecord]) -> None:
    from core.runs import worker

    ws = _workspace()
    info = worker.worker_info(ws)
    if not info and any(r.status is RunStatus.QUEUED for r in runs):
        worker.ensure_worker(ws)  # a queued run needs a worker (it exits when idle)
        info = worker.worker_info(ws)
    state = f"running (pid {info.get('pid')})" if info else "not running (it starts when a run is queued)"
    devices, error = _device_choices(str(ws))
    if _launcher_kind(str(ws)) == "ray":
        _cluster_line(_ray_status(str(ws)), state)
        return
    if error:
        st.warning(f"The devices could not be listed: {error}", icon=":material/warning:")
    slots = ", ".join(f"{name} ×{n}" for name, _, n in devices)
    st.caption(
        f":material/dns: Launcher: local processes on this machine · runs at once: {slots} · worker: {state}"
    )


def _cluster_line(status: dict[str, Any], state: str) -> None:
    """The Ray cluster the runs go to: its nodes, free CPUs and GPUs, or why it does not answer."""
    address = status.get("address") or "(no address)"
    if not status["reachable"]:
        st.warning(
            f"Runs go to the Ray cluster at {address}, which does not answer: {status['error']}. "
            "Queued runs wait until it does.",
            icon=":material/cloud_off:",
        )
        st.caption(f":material/dns: Launcher: Ray jobs at {address} · worker: {state}")
        return
    nodes = [n for n in status["nodes"] if n.get("alive")]
    cpus, gpus = status["cpus"], status["gpus"]

    def free(res: dict[str, Any]) -> str:
        if not res["total"]:
            return "none"
        total = f"{res['total']:g}"
        return f"{res['free']:g} of {total} free" if res.get("free") is not None else f"{total} in all"

    st.caption(
        f":material/hub: Launcher: Ray jobs at {address} · {len(nodes)} node(s) alive · CPUs {free(cpus)} · "
        f"GPUs {free(gpus)} · {len(status['running'])} run(s) on the cluster · worker: {state}"
    )
    with st.expander(f"Cluster nodes ({len(status['nodes'])})", icon=":material/hub:"):
        import pandas as pd

        table = pd.DataFrame(status["nodes"], columns=["host", "head", "alive", "cpus", "gpus"])
        st.dataframe(table, hide_index=True)


def _runs_panel(live_at_start: bool) -> None:
    with guard("the runs table"):
        store = rw.run_store()
        runs = store.list_runs()
        if rw.is_live(runs) != live_at_start:
            st.rerun()  # re-arms (or stops) the 2 s refresh
        _worker_line(runs)
        if not runs:
            st.info(
                "No runs yet. Pick what to train below and press **Launch**: runs train in the background, "
                "keep going when you close the tab, and show up here.",
                icon=":material/info:",
            )
            return
        table = views.runs_table(runs, rw.best_so_far(runs))
        picked = rw.select_runs(
            table,
            RUNS_KEY,
            mode="single-row",
            default_ids=[runs[0].id],
            column_order=[c for c in table.columns if c != "id"],  # views.runs_table's order
            column_config={
                "status": st.column_config.TextColumn("status", help=rw.STATUS_HELP, width="small"),
                "progress": st.column_config.ProgressColumn(
                    "progress", format="%.0f%%", min_value=0, max_value=100
                ),
                "best": st.column_config.NumberColumn(
                    "best val", format="%.4f", help="Best value so far of the run's monitor"
                ),
                "created": rw.created_column(),
                "note": st.column_config.TextColumn("note", width="large"),
            },
            height=min(38 + 35 * len(table), 400),
        )
        if not picked:
            st.caption("Select a run in the table to act on it and read its log.")
            return
        rec = store.get_run(picked[0])
        _actions(rec)
        _details(rec)


def _actions(rec: RunRecord) -> None:
    from core.runs import submit

    bar = st.container(horizontal=True)
    if rec.status in views.LIVE and bar.button(
        "Cancel", key="tr_cancel", icon=":material/stop_circle:", disabled=rec.cancel_requested
    ):
        submit.cancel_run(rec.id)
        rw.flash(
            f"Cancelling {rec.name}: it stops within seconds and keeps its last checkpoint.",
            ":material/stop_circle:",
        )
        st.rerun()
    if rec.status in (RunStatus.FAILED, RunStatus.CANCELLED) and bar.button(
        "Resume",
        key="tr_resume",
        icon=":material/play_circle:",
        help="Queue it again; it continues from its last checkpoint.",
    ):
        submit.resume_run(rec.id)
        rw.flash(f"Queued {rec.name} to resume from its last checkpoint.", ":material/play_circle:")
        st.rerun()
    with bar.popover("Delete", icon=":material/delete:"):
        if rec.status is RunStatus.RUNNING:
            st.warning(
                f"**{rec.name}** is running: cancel it first, then delete it.", icon=":material/block:"
            )
        else:
            st.markdown(
                f"Delete **{rec.name}** ({rec.id}) with its metrics, checkpoints and log? This cannot be undone."
            )
            if st.button(
                "Delete for good", key="tr_delete", type="primary", icon=":material/delete_forever:"
            ):
                submit.delete_run(rec.id)
                rw.select_next_time(RUNS_KEY, [])
                rw.flash(f"Deleted run {rec.name} ({rec.id}).", ":material/delete:")
                st.rerun()
    with bar:
        rw.page_link("pages/compare.py", "Curves on the Compare page", ":material/stacked_line_chart:")


def _details(rec: RunRecord) -> None:
    from core.runs import submit

    if rec.status is RunStatus.FAILED and rec.error:
        first, _, rest = rec.error.partition("\n")
        st.error(f"**{rec.name} failed:** {first}", icon=":material/error:")
        if rest.strip():
            with st.expander("The last log lines before it failed"):
                st.code(rest.strip(), language=None)
    with st.expander(f"Config and setup of {rec.name}"):
        left, right = st.columns(2)
        left.json(rec.config, expanded=1)
        right.json(rec.info or {"note": "filled in when the run starts"}, expanded=1)
    log = submit.tail_log(rec.id, 80)
    st.markdown(f"**Log** of {rec.name} (last 80 lines)")
    with st.container(height=300, autoscroll=True, border=True):
        st.code(
            log or "(nothing yet: the log starts when the worker starts the run)",
            language=None,
            wrap_lines=True,
        )


# ---------------------------------------------------------------- the page


def main() -> None:
    st.title("Train")
    rw.show_flashes()
    st.caption(
        "Queue runs that train in the background: they keep going when you close the tab or restart "
        "the app. Watch their curves on the Compare page."
    )
    live = False
    with guard("reading the runs"):
        live = rw.is_live(rw.run_store().list_runs())
    st.subheader("Runs")
    st.fragment(run_every=rw.refresh_every(live))(_runs_panel)(live)
    st.subheader("New run")
    st.fragment(_launcher)()


main()
