"""``python -m core train``: one run in the foreground with a progress bar, queued with
``--background``, or (``--run-id``, as the worker does) a run already in the store."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from core.cli import command
from core.errors import ConfigError

_MAPPINGS = {"format_options": "format-option", "loss_params": "loss-param", "sampler_params": "sampler-param"}
_SKIP = {"task", "task_name", "tags", *_MAPPINGS}
_HELP = {
    "data": "dataset path (folder or CSV)",
    "format": "dataset format (default auto-detect)",
    "arch": "architecture (see python -m core archs)",
    "pretrained": "none, imagenet (torchvision weights via the torch hub cache), or a state_dict file",
    "in_channels": "1 (gray) or 3",
    "img_size": "square input size in pixels",
    "loss": "ce, weighted_ce, class_balanced, bce, focal",
    "sampler": "none, oversample, undersample",
    "optimizer": "sgd, adam, adamw",
    "schedule": "none, step, cosine, onecycle",
    "freeze": "none, backbone, epochs (frozen for --freeze-epochs then unfrozen)",
    "augment": "none, light, medium",
    "normalize": "imagenet or dataset (the training split's own mean/std)",
    "early_stopping": "patience in epochs (0 = off)",
    "monitor": "val metric that picks the best checkpoint",
    "precision": "auto (bf16 where the hardware has it), fp32, bf16, fp16 (CUDA)",
    "device": "auto, cpu, cuda, cuda:N",
    "allow_leakage": "train even though patients or images are shared between splits",
}


def _key_value(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    try:
        return k.strip(), json.loads(v)
    except json.JSONDecodeError:
        return k.strip(), v


def arguments(p: argparse.ArgumentParser) -> None:
    from core.config import RunConfig

    mode = p.add_argument_group("what to run")
    mode.add_argument("--config", metavar="FILE", help="a run config JSON file (flags override it)")
    mode.add_argument("--task", metavar="NAME", help="a task saved in the workspace (brings its dataset)")
    mode.add_argument("--background", action="store_true", help="queue the run for the worker and return its id")
    mode.add_argument("--run-id", metavar="RUN_ID", help="train a run already in the store (what the worker starts)")
    opts = p.add_argument_group("run config")
    for f in fields(RunConfig):
        if f.name in _SKIP:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else None
        if f.type == "bool":
            opts.add_argument(flag, action="store_true", default=None, help=_HELP.get(f.name))
        else:
            typ = {"int": int, "float": float}.get(str(f.type), str)
            opts.add_argument(flag, type=typ, default=None, metavar=f.name.upper(),
                              help=f"{_HELP.get(f.name, '')} (default {default})".strip())
    for key, flag in _MAPPINGS.items():
        opts.add_argument(f"--{flag}", dest=key, action="append", type=_key_value, metavar="KEY=VALUE",
                          help=f"{key.replace('_', ' ')} (repeatable)")
    opts.add_argument("--tag", dest="tags", action="append", metavar="TAG", help="a tag (repeatable)")


def build_config(args: argparse.Namespace) -> Any:
    from core.config import RunConfig
    from core.data.tasks import load_task

    base: dict[str, Any] = {}
    if args.config:
        path = Path(args.config)
        try:
            base = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(base, dict):
            raise ConfigError(f"{path}: a run config is a JSON object")
    if args.task:
        task, dataset = load_task(args.task)
        base.update(task=task.to_dict(), task_name=task.name, data=dataset["path"],
                    format=dataset.get("format", "auto"), format_options=dataset.get("options", {}))
    for f in fields(RunConfig):
        value = getattr(args, f.name, None)
        if value is None:
            continue
        if f.name in _MAPPINGS:
            merged = dict(base.get(f.name, {}))
            merged.update(dict(value))
            value = merged
        base[f.name] = value
    return RunConfig.from_dict(base)


def _render(result: dict[str, Any]) -> str:
    lines = [f"run {result['run_id']}: {result['status']}"]
    for k, v in (result.get("best") or {}).items():
        lines.append(f"  best {k}: {v:.4f}" if isinstance(v, float) else f"  best {k}: {v}")
    test = result.get("test") or {}
    for k in ("auc", "balanced_accuracy", "sensitivity", "specificity", "f1"):
        if k in test:
            lines.append(f"  test {k}: {test[k]:.4f}")
    return "\n".join(lines)


def _leakage_gate(config: Any) -> Any:
    """Refuse a task whose splits share patients or images unless --allow-leakage."""
    from core.evaluate.leakage import check_leakage
    from core.progress import tqdm_progress

    with tqdm_progress("leakage audit", unit="img") as progress:
        report = check_leakage(config, progress=progress)
    if report.leaks and not config.allow_leakage:
        raise ConfigError(f"{report.summary}; fix the task's splits or pass --allow-leakage to train anyway")
    if report.leaks:
        print(f"warning: training although {report.summary} (--allow-leakage)", file=sys.stderr)
    return report


def _check_weights(config: Any) -> None:
    """The weights the run starts from are here (ImageNet: fetched into the hub cache now if
    missing), or one line saying where to put them: never a run that fails at its start."""
    import models

    try:
        models.check_pretrained(config.arch, config.pretrained)
    except (models.PretrainedWeightsUnavailable, models.WeightsFileError) as exc:
        raise ConfigError(f"--pretrained {config.pretrained}: {exc}") from None


def _launches_here() -> bool:
    from core.runs.worker import launcher_name, load_settings

    return launcher_name(load_settings()) == "local"


@command("train", "train one run (foreground with a progress bar, or --background to queue it)", arguments, _render)
def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.run_id:
        from core.runs.execute import check_workspace

        # On a cluster node: before torch loads, the store opens or a run folder is made there.
        check_workspace()
    from core.evaluate.leakage import record_leakage
    from core.runs.execute import execute_run, start_here
    from core.runs.store import RunStore
    from core.runs.submit import submit_run
    from core.train.device import resolve_device
    from core.train.reporter import TqdmReporter

    store = RunStore()
    if args.run_id:
        record = store.get_run(args.run_id)
        return execute_run(store, record, device=args.device)
    config = build_config(args)
    # A device this machine cannot use is one clear error now, not a failed run later (a
    # cluster's devices are for its worker to check: this machine may have no GPU).
    if not args.background or _launches_here():
        resolve_device(config.device)
        _check_weights(config)
    leakage = _leakage_gate(config)
    if args.background:
        rec = submit_run(config, store=store)
        record_leakage(rec.id, leakage, store=store)
        return {"run_id": rec.id, "status": rec.status.value}
    record = start_here(store, config)
    record_leakage(record.id, leakage, store=store)
    with TqdmReporter(config.epochs, monitor=config.monitor, enabled=sys.stderr.isatty()) as bar:
        return execute_run(store, record, extra_reporters=(bar,), log_file=True)
