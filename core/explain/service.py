"""Explanations for a loaded run: what the Inspect page and ``python -m core cam`` call.

- ``explain(loaded, image, methods, target, layer)`` -> one ``MapResult`` per method, from
  the map cache when it has it.
- ``score_split(run, split, methods)`` -> energy-in-box, pointing game and faithfulness
  per method over a split's images with lesion boxes, with a progress callback; maps come
  from the map cache and per-image scores from a score cache, so a second run is instant
  and an interrupted one resumes.

Thread safety: every function that runs a model holds that model's lock (``model_lock``),
so a page may share one ``LoadedModel`` between sessions. Hooks are always removed.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from core.errors import ConfigError, DataError
from core.explain.cache import MapCache, MapKey, default_cache, image_hash
from core.explain.methods import LogitTarget, get_method, load_library
from core.explain.scorecam import DEFAULT_CRITERION, DEFAULT_STRATEGY, DEFAULT_TOP_K
from core.progress import ProgressFn, no_progress

TargetSpec = int | str | None  # None / "predicted", "true", a class index or a class name
LayerSpec = str | Sequence[str] | None  # None = the architecture's default

_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_LOCK = threading.Lock()


def model_lock(model: nn.Module) -> threading.RLock:
    """One lock per model object: hooks and ``zero_grad`` must not interleave."""
    with _LOCKS_LOCK:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock


@dataclass
class MapResult:
    method: str
    label: str
    cam: np.ndarray | None  # (S, S) float32 in [0, 1] over the model's (square) input
    seconds: float  # what computing it took (also when it came from the cache)
    target: int
    target_class: str
    layers: tuple[str, ...]
    top_k: int | None = None  # Score-CAM only: channels scored (None = all)
    cached: bool = False
    error: str | None = None  # set instead of ``cam`` when errors="collect"


# ---------------------------------------------------------------- targets and layers


def resolve_target(
    classes: Sequence[str], probs: np.ndarray, target: TargetSpec = None, true_index: int | None = None
) -> int:
    """A class index from "predicted" (None), "true", an index or a class name."""
    if target is None or target == "predicted":
        return int(np.argmax(probs))
    if target == "true":
        if true_index is None:
            raise ConfigError(
                "target 'true': this image's class is unknown (it is not in the run's dataset); "
                "use predicted or a class name"
            )
        return int(true_index)
    if isinstance(target, str) and target in classes:
        return list(classes).index(target)
    if isinstance(target, (int, np.integer)) or (isinstance(target, str) and target.strip().isdigit()):
        index = int(target)
        if 0 <= index < len(classes):
            return index
    raise ConfigError(
        f"target {target!r} is not a class of this run; valid: predicted, true, "
        + ", ".join(f"{i} ({c})" for i, c in enumerate(classes))
    )


def default_layers(arch: str) -> tuple[str, ...]:
    from models import get_arch

    return tuple(get_arch(arch).target_layers)


def layer_names(arch: str, layer: LayerSpec = None) -> tuple[str, ...]:
    if layer is None or layer == "" or layer == "default":
        return default_layers(arch)
    names = (
        [s.strip() for s in layer.split(",")] if isinstance(layer, str) else [str(s).strip() for s in layer]
    )
    names = [n for n in names if n]
    if not names:
        return default_layers(arch)
    return tuple(names)


def resolve_layers(model: nn.Module, names: Sequence[str]) -> list[nn.Module]:
    from models import get_submodule

    modules = []
    for name in names:
        try:
            modules.append(get_submodule(model, name))
        except ValueError as exc:
            raise ConfigError(f"layer {name!r}: {exc}; list the valid ones with list_layers") from None
    return modules


def list_layers(model: nn.Module, in_channels: int | None = None, size: int = 64) -> list[str]:
    """Names of the modules a CAM can target, in the order the forward pass runs them:
    modules with a 4-D tensor output, called once per forward pass, whose output is not
    modified in place afterwards (a hook would see the values change after it fired)."""
    from core.explain.scorecam import _first_conv_channels

    in_channels = in_channels or _first_conv_channels(model)
    seen: dict[str, list[Any]] = {}
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue

        def record(mod: nn.Module, args: Any, output: Any, name: str = name) -> None:
            if isinstance(output, torch.Tensor) and output.ndim == 4:
                seen.setdefault(name, []).append((output, output._version))
            else:
                seen.setdefault(name, []).append((None, 0))

        handles.append(module.register_forward_hook(record))
    with model_lock(model):
        was_training = model.training
        model.eval()
        try:
            device = next(model.parameters()).device
            with torch.inference_mode(False), torch.no_grad():
                model(torch.zeros(1, in_channels, size, size, device=device))
        finally:
            for h in handles:
                h.remove()
            model.train(was_training)
    return [
        name
        for name, calls in seen.items()
        if len(calls) == 1 and calls[0][0] is not None and calls[0][0]._version == calls[0][1]
    ]


# ---------------------------------------------------------------- explain


def predict(loaded: Any, image: np.ndarray) -> np.ndarray:
    """Class probabilities of one uint8 image."""
    with model_lock(loaded.model):
        return loaded.predict_proba(loaded.to_input(image))[0]


def _method_options(
    name: str, loaded: Any, names: tuple[str, ...], top_k: int | None, criterion: str, strategy: str
) -> dict[str, Any]:
    opts: dict[str, Any] = {"arch": loaded.arch}
    if name == "cam":
        from core.explain.methods import classic_cam_classifier

        opts["classifier"] = classic_cam_classifier(loaded.model, loaded.arch)
        if names != default_layers(loaded.arch):
            raise ConfigError(
                f"classic CAM works on the feature map the classifier pools "
                f"({', '.join(default_layers(loaded.arch))}), not {', '.join(names)}; use Grad-CAM"
            )
    if name == "scorecam":
        opts.update(
            top_k=top_k or None, criterion=criterion, strategy=strategy, precision=loaded.config.precision
        )
    return opts


def explain(
    loaded: Any,
    image: np.ndarray,
    methods: Sequence[str],
    target: TargetSpec = None,
    layer: LayerSpec = None,
    *,
    true_index: int | None = None,
    top_k: int | None = DEFAULT_TOP_K,
    criterion: str = DEFAULT_CRITERION,
    strategy: str = DEFAULT_STRATEGY,
    cache: MapCache | None | bool = True,
    errors: str = "raise",
    progress: ProgressFn = no_progress,
) -> list[MapResult]:
    """One map per method for a uint8 image (any size; it is squashed to the run's input
    size as in training). ``top_k`` applies to Score-CAM (None or 0 = every channel).
    ``cache`` True uses the workspace's map cache, a ``MapCache`` that one, False/None
    none. ``errors="collect"`` turns a method's ``ChestLabError`` (classic CAM on DRENet)
    into ``MapResult.error`` instead of raising."""
    if errors not in ("raise", "collect"):
        raise ValueError(f"errors must be 'raise' or 'collect', got {errors!r}")
    specs = [get_method(m) for m in methods]
    names = layer_names(loaded.arch, layer)
    store = _cache_for(loaded, cache)
    load_library()  # its import is not any method's time
    with model_lock(loaded.model):
        x = loaded.to_input(image)
        probs = loaded.predict_proba(x)[0]
        index = resolve_target(loaded.classes, probs, target, true_index)
        goal = LogitTarget(index, bool(loaded.single_logit))
        modules = resolve_layers(loaded.model, names)
        image_id = image_hash(image)
        results = []
        for i, spec in enumerate(specs):
            progress(i, len(specs), spec.label)
            k = (top_k or None) if spec.name == "scorecam" else None
            result = MapResult(spec.name, spec.label, None, 0.0, index, loaded.classes[index], names, k)
            key = _key(loaded, image_id, spec.name, names, index, k, f"{criterion}/{strategy}" if k else "")
            hit = store.get(key) if store is not None else None
            if hit is not None:
                result.cam, result.seconds, result.cached = hit.cam, hit.seconds, True
            else:
                try:
                    opts = _method_options(spec.name, loaded, names, k, criterion, strategy)
                    start = time.perf_counter()
                    result.cam = spec.compute(loaded.model, x, modules, goal, **opts)
                    result.seconds = time.perf_counter() - start
                except ConfigError as exc:
                    if errors == "raise":
                        raise
                    result.error = str(exc)
                except (RuntimeError, ValueError, IndexError) as exc:
                    # A layer whose output does not suit the method (a block inside a stage,
                    # a pooled 1x1 output): one clear line, not a traceback from the library.
                    first = str(exc).splitlines()[0][:200] if str(exc) else ""
                    err = ConfigError(f"{spec.label} cannot use layer {', '.join(names)} of {loaded.arch} "
                                      f"({type(exc).__name__}: {first}); pick another layer")
                    if errors == "raise":
                        raise err from None
                    result.error = str(err)
                if result.cam is not None and store is not None:
                    store.put(key, result.cam, result.seconds)
            results.append(result)
        progress(len(specs), len(specs), "")
    return results


def _cache_for(loaded: Any, cache: MapCache | None | bool) -> MapCache | None:
    if isinstance(cache, MapCache):
        return cache
    if cache is True and getattr(loaded, "run_id", None):
        return default_cache(_workspace_of(loaded))
    return None


def _workspace_of(loaded: Any) -> str | None:
    # checkpoints live in <workspace>/runs/<id>/checkpoints/<file>
    path = getattr(loaded, "checkpoint", "")
    return (
        os.fspath(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(path))))) if path else None
    )


def _key(
    loaded: Any, image_id: str, method: str, names: tuple[str, ...], index: int, k: int | None, criterion: str
) -> MapKey:
    return MapKey(
        str(loaded.run_id),
        os.path.basename(str(loaded.checkpoint)),
        float(loaded.checkpoint_mtime),
        image_id,
        method,
        ",".join(names),
        index,
        int(k or 0),
        criterion,
        int(loaded.img_size),
    )


def estimate_scorecam_seconds(loaded: Any, k: int | None = DEFAULT_TOP_K, layer: LayerSpec = None) -> float:
    """Seconds one Score-CAM map should take for this run (k None or 0 = every channel)."""
    from core.explain.scorecam import estimate_seconds

    with model_lock(loaded.model):
        return estimate_seconds(
            loaded.model,
            layer_names(loaded.arch, layer),
            k,
            loaded.img_size,
            precision=loaded.config.precision,
        )


# ---------------------------------------------------------------- the run's dataset


@dataclass
class SplitItem:
    path: str
    boxes: list[tuple[float, float, float, float]]  # pixels of the original image
    true_index: int | None


_DATASETS: dict[tuple, tuple[Any, Any]] = {}
_DATASETS_LOCK = threading.Lock()


def run_dataset(config: Any, classes: Sequence[str], workspace: Any = None) -> tuple[Any, Any]:
    """The run's task table (path, split, class index as trained) and the dataset's lesion
    boxes, from the (cached) scan of the run's dataset."""
    import json

    from core.data.index import scan
    from core.data.tasks import Task, apply_task

    if not config.data:
        raise DataError("this run names no dataset")
    key = (
        config.data,
        config.format,
        json.dumps(dict(config.format_options), sort_keys=True, default=str),
        json.dumps(dict(config.task), sort_keys=True, default=str),
        tuple(classes),
        str(workspace),
    )
    with _DATASETS_LOCK:
        if key in _DATASETS:
            return _DATASETS[key]
    report = scan(config.data, config.format, options=dict(config.format_options), workspace=workspace)
    table = apply_task(report.index, Task.from_dict(config.task) if config.task else Task())
    index_of = {c: i for i, c in enumerate(classes)}
    table = table.assign(
        true_index=table["class_name"].map(index_of), path=table["path"].map(os.path.abspath)
    )
    boxes = (
        report.boxes.assign(path=report.boxes["path"].map(os.path.abspath))
        if len(report.boxes)
        else report.boxes
    )
    with _DATASETS_LOCK:
        if len(_DATASETS) > 8:
            _DATASETS.clear()
        _DATASETS[key] = (table, boxes)
    return table, boxes


def image_info(loaded: Any, path: str, workspace: Any = None) -> SplitItem | None:
    """The image's true class and lesion boxes when it belongs to the run's dataset."""
    try:
        table, boxes = run_dataset(loaded.config, loaded.classes, workspace)
    except (DataError, ConfigError):
        return None
    path = os.path.abspath(path)
    rows = table[table["path"] == path]
    if rows.empty:
        return None
    true = rows["true_index"].iloc[0]
    return SplitItem(path, _boxes_of(boxes, path), None if true != true else int(true))  # NaN check


def _boxes_of(boxes: Any, path: str) -> list[tuple[float, float, float, float]]:
    if boxes is None or len(boxes) == 0:
        return []
    rows = boxes[boxes["path"] == path]
    return [(float(r.x), float(r.y), float(r.width), float(r.height)) for r in rows.itertuples()]


def split_items(
    loaded: Any, split: str, *, limit: int | None = None, workspace: Any = None
) -> list[SplitItem]:
    """The split's images that have lesion boxes, in path order (the first ``limit``)."""
    table, boxes = run_dataset(loaded.config, loaded.classes, workspace)
    if split not in set(table["split"]):
        raise ConfigError(
            f"split {split!r} has no images in this run's dataset; it has: "
            + ", ".join(sorted(set(table["split"]) - {""}))
        )
    if boxes is None or len(boxes) == 0:
        raise DataError(f"dataset {loaded.config.data} has no lesion boxes: localisation scores need them")
    rows = table[(table["split"] == split) & table["path"].isin(set(boxes["path"]))].sort_values("path")
    items = [
        SplitItem(
            r.path, _boxes_of(boxes, r.path), None if r.true_index != r.true_index else int(r.true_index)
        )
        for r in rows.itertuples()
    ]
    if not items:
        raise DataError(f"split {split!r} of {loaded.config.data} has no images with lesion boxes")
    return items[:limit] if limit else items


# ---------------------------------------------------------------- scores over a split


@dataclass
class SplitScores:
    table: list[dict[str, Any]]  # one row per method
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per image and method
    faithfulness: str = "deletion"
    higher_is_better: bool = False


def score_images(
    loaded: Any,
    items: Sequence[SplitItem],
    methods: Sequence[str],
    *,
    layer: LayerSpec = None,
    target: TargetSpec = "true",
    faithfulness: str = "deletion",
    top_k: int | None = DEFAULT_TOP_K,
    cache: MapCache | None | bool = True,
    workspace: Any = None,
    progress: ProgressFn = no_progress,
) -> SplitScores:
    """Localisation and faithfulness of each method over images with boxes. The target is
    the true class by default (the lesion's class; falls back to the predicted class for an
    image without one). Rows are cached per image in the workspace."""
    from core.data.images import read_gray
    from core.explain import scores as sc

    metric = sc.get_faithfulness(faithfulness)
    for m in methods:
        get_method(m)
    store = _ScoreStore(loaded, layer_names(loaded.arch, layer), target, metric.name, top_k, workspace)
    rows: list[dict[str, Any]] = []
    total = len(items) * len(methods)
    for i, item in enumerate(items):
        progress(i * len(methods), total, os.path.basename(item.path))
        cached = [store.get(item.path, m) for m in methods]
        if all(c is not None for c in cached):
            rows.extend(cached)  # type: ignore[arg-type]
            continue
        image = read_gray(item.path)
        spec = target if not (target == "true" and item.true_index is None) else None
        results = explain(
            loaded, image, methods, spec, layer, true_index=item.true_index, top_k=top_k, cache=cache
        )
        size = loaded.img_size
        boxes = sc.boxes_to_map(item.boxes, image.shape[1], image.shape[0], size)
        with model_lock(loaded.model):
            x = loaded.to_input(image)
            for r in results:
                goal = LogitTarget(r.target, bool(loaded.single_logit))
                row = {
                    "path": item.path,
                    "method": r.method,
                    "target": r.target,
                    "energy_in_box": sc.energy_in_box(r.cam, boxes),
                    "pointing_game": bool(sc.pointing_game(r.cam, boxes)),
                    "box_share": sc.box_area_share(r.cam.shape, boxes),
                    "faithfulness": sc.faithfulness(metric.name, loaded.model, x, r.cam, goal),
                    "seconds": r.seconds,
                }
                store.put(row)
                rows.append(row)
        store.flush()
    progress(total, total, "")
    store.flush()
    return SplitScores(_summarise(rows, methods), rows, metric.name, metric.higher_is_better)


def _summarise(rows: list[dict[str, Any]], methods: Sequence[str]) -> list[dict[str, Any]]:
    def mean(mine: list[dict[str, Any]], key: str) -> float:
        return float(np.mean([r[key] for r in mine])) if mine else float("nan")

    table = []
    for m in methods:
        mine = [r for r in rows if r["method"] == m]
        table.append(
            {
                "method": m,
                "n_images": len(mine),
                "energy_in_box": mean(mine, "energy_in_box"),
                "pointing_game": mean(mine, "pointing_game"),
                "faithfulness": mean(mine, "faithfulness"),
                "seconds_per_image": mean(mine, "seconds"),
            }
        )
    return table


class _ScoreStore:
    """Per-image score rows in one JSON file per (run, checkpoint, layers, target, metric, k)."""

    def __init__(
        self,
        loaded: Any,
        names: tuple[str, ...],
        target: TargetSpec,
        metric: str,
        top_k: int | None,
        workspace: Any,
    ) -> None:
        import hashlib
        import json

        from core.workspace import cache_dir

        self.path = None
        self.rows: dict[str, dict[str, Any]] = {}
        self.dirty = False
        if not getattr(loaded, "run_id", None):
            return
        ident = json.dumps(
            [
                loaded.run_id,
                os.path.basename(str(loaded.checkpoint)),
                loaded.checkpoint_mtime,
                list(names),
                str(target),
                metric,
                int(top_k or 0),
            ]
        )
        digest = hashlib.sha1(ident.encode()).hexdigest()[:24]
        self.path = cache_dir("cam_scores", workspace or _workspace_of(loaded)) / f"{digest}.json"
        try:
            self.rows = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.rows = {}

    def get(self, path: str, method: str) -> dict[str, Any] | None:
        return self.rows.get(f"{method}|{path}")

    def put(self, row: dict[str, Any]) -> None:
        self.rows[f"{row['method']}|{row['path']}"] = row
        self.dirty = True

    def flush(self) -> None:
        from core.fileio import atomic_write_json

        if self.path is not None and self.dirty:
            atomic_write_json(self.path, self.rows, indent=None)
            self.dirty = False


def score_split(
    run: Any,
    split: str,
    methods: Sequence[str],
    *,
    limit: int | None = None,
    workspace: Any = None,
    **kwargs: Any,
) -> SplitScores:
    """``score_images`` over a split's images with boxes; ``run`` is a run id or a LoadedModel."""
    loaded = run
    if isinstance(run, str):
        from core.evaluate.predict import load_run_model

        loaded = load_run_model(run, workspace=workspace)
    items = split_items(loaded, split, limit=limit, workspace=workspace)
    return score_images(loaded, items, methods, workspace=workspace, **kwargs)


__all__ = [
    "MapResult",
    "SplitItem",
    "SplitScores",
    "default_layers",
    "estimate_scorecam_seconds",
    "explain",
    "image_info",
    "layer_names",
    "list_layers",
    "model_lock",
    "predict",
    "resolve_layers",
    "resolve_target",
    "run_dataset",
    "score_images",
    "score_split",
    "split_items",
]
