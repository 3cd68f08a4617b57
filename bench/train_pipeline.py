"""Training speed: the notebooks' input pipeline against ours (issue 4, item 8).

One process, the same 1,000 chest-like 1024x1024 PNGs (train / val / test class folders,
rendered once by the demo's renderer and reused), the same ResNet-18 with a 1-channel stem at
224 px, batch 32, Adam at the same learning rate, plain cross-entropy, the same seed and
number of epochs:

- the notebooks' way: ``torchvision.datasets.ImageFolder`` + ``transforms.Compose`` (PIL
  decode and resize of every 1024-px file every epoch, flip + rotation), a ``DataLoader``
  with 2 worker processes, fp32;
- ours: ``core.train.loop.Trainer`` exactly as ``python -m core train`` runs it (the uint8
  image cache built once, batched augmentation, bf16 autocast + channels_last where the CPU
  has native bf16, the process's allocator set to reuse freed blocks: core/train/allocator.py),
  reporting to a run folder whose metric rows give images/s and the data-wait share per epoch.
  The notebooks' way runs first, so it keeps glibc's default allocator, as in a notebook.

    python bench/train_pipeline.py [--epochs 8] [--data-dir DIR] [--max-batches N] [--profile]

Targets on 2 cores: ours >= 3x the notebooks' images/s for ResNet-18 at 224 px with no loss of
val AUC; data wait <= 10% of our step time. The last line is ``ratio: R`` (ours / notebooks').
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_DATA = Path(tempfile.gettempdir()) / "chestlab-bench" / "chest-1024"
SOURCE_SIZE = 1024
MARKER = ".bench-images.json"
TARGET_RATIO = 3.0
TARGET_WAIT = 0.10
AUC_TOLERANCE = 0.02  # "no loss of val AUC": within this of the notebooks' (157 val images)


# ---------------------------------------------------------------------------------------
# The images: rendered once, 8-bit PNG in class folders, reused by every later run


def _render_patient(root: str, items: list[Any], size: int) -> int:
    from PIL import Image

    from core.data.demo import render_item

    for item in items:
        img, _ = render_item(item, size)
        path = Path(root) / item.split / item.label / f"{item.patient_id}_{item.image_no}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        # PIL's default PNG compression, as downloaded datasets are written
        Image.fromarray(np.rint(img * 255).astype(np.uint8)).save(tmp, format="PNG")
        os.replace(tmp, path)
    return len(items)


def ensure_images(root: Path, seed: int, workers: int) -> dict[str, int]:
    """The demo's 1,000-image plan rendered at 1024 px into ``root`` (reused when complete).
    Every image is written as 8-bit PNG, whatever file format the demo would have chosen, so
    that ImageFolder (which skips DICOM and clips 16-bit PNGs in PIL's ``L`` conversion) and
    our reader see the very same pixels."""
    from core.data.demo import plan_demo

    marker = root / MARKER
    want = {"seed": seed, "size": SOURCE_SIZE}
    if marker.is_file():
        info = json.loads(marker.read_text())
        if {k: info.get(k) for k in want} == want:
            return info["splits"]
    plan = plan_demo(seed)
    groups: dict[str, list[Any]] = {}
    for item in plan:
        groups.setdefault(item.patient_id, []).append(item)
    root.mkdir(parents=True, exist_ok=True)
    print(f"rendering {len(plan)} {SOURCE_SIZE}x{SOURCE_SIZE} images into {root} (once) ...", flush=True)
    t0, done, report_at = time.perf_counter(), 0, 100
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        jobs = [pool.submit(_render_patient, str(root), items, SOURCE_SIZE) for items in groups.values()]
        for job in jobs:
            done += job.result()
            if done >= report_at or done == len(plan):
                print(f"  {done}/{len(plan)} ({time.perf_counter() - t0:.0f} s)", flush=True)
                report_at = done + 100
    splits: dict[str, int] = {}
    for item in plan:
        splits[item.split] = splits.get(item.split, 0) + 1
    marker.write_text(json.dumps({**want, "n_images": len(plan), "splits": splits}))
    return splits


# ---------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class Settings:
    epochs: int = 2
    batch_size: int = 32
    img_size: int = 224
    lr: float = 1e-3
    seed: int = 0
    max_batches: int | None = None  # per epoch, the notebooks' way only


@dataclass
class Result:
    name: str
    images: list[int] = field(default_factory=list)  # training images per epoch
    seconds: list[float] = field(default_factory=list)  # wall time per epoch
    val_auc: list[float] = field(default_factory=list)  # val macro ROC-AUC after each epoch
    cpu_seconds: list[float] = field(default_factory=list)  # CPU time per epoch, DataLoader workers included
    data_wait: list[float] = field(default_factory=list)  # share of the epoch spent waiting for batches
    cache_seconds: float | None = None  # ours only
    whole_epochs: bool = True
    note: str = ""

    @property
    def images_per_s(self) -> float:
        return sum(self.images) / sum(self.seconds) if self.seconds else math.nan

    @property
    def images_per_cpu_s(self) -> float:
        return sum(self.images) / sum(self.cpu_seconds) if self.cpu_seconds else math.nan

    @property
    def epoch_seconds(self) -> float:
        return float(np.mean(self.seconds)) if self.seconds and self.whole_epochs else math.nan


def warm_up(
    model: Any, device: Any, batch_size: int, img_size: int, autocast: Any, channels_last: bool
) -> None:
    """Two untimed steps on a throwaway copy, so one-off kernel selection (oneDNN, cuDNN) is
    not charged to the first timed epoch and the model being measured is left untouched."""
    import torch

    m = copy.deepcopy(model).train()
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(batch_size, 1, img_size, img_size, generator=g).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 3, (batch_size,), generator=g).to(device)
    for _ in range(2):
        with autocast:
            loss = torch.nn.functional.cross_entropy(m(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)


def cpu_clock() -> float:
    """CPU seconds of this process's threads and of its exited children (DataLoader workers
    are joined when their epoch ends). On a loaded machine wall time measures the share of
    the CPU a pipeline got, CPU time what it needed."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _sync(device: Any) -> None:
    import torch

    if getattr(device, "type", str(device)).startswith("cuda"):
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------
# The notebooks' way


def notebook_transforms(img_size: int, train: bool) -> Any:
    from torchvision import transforms as T

    mean, std = _gray_imagenet()
    aug = [T.RandomHorizontalFlip(), T.RandomRotation(10)] if train else []
    return T.Compose(
        [T.Grayscale(1), T.Resize((img_size, img_size)), *aug, T.ToTensor(), T.Normalize(mean, std)]
    )


def _gray_imagenet() -> tuple[tuple[float], tuple[float]]:
    from core.train.data import IMAGENET_MEAN, IMAGENET_STD

    # the same normalisation ours uses for a 1-channel stem, so only the pipeline differs
    return (float(np.mean(IMAGENET_MEAN)),), (float(np.mean(IMAGENET_STD)),)


def notebook_model(seed: int, n_classes: int) -> Any:
    """torchvision's ResNet-18 with a 1-channel first conv, as the RSNA notebook built it."""
    import torch
    from torch import nn
    from torchvision.models import resnet18

    torch.manual_seed(seed)
    model = resnet18(num_classes=n_classes)
    model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model


def notebook_loaders(root: Path, s: Settings, workers: int, device: Any) -> tuple[Any, Any]:
    import torch
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    train = ImageFolder(str(root / "train"), transform=notebook_transforms(s.img_size, True))
    val = ImageFolder(str(root / "val"), transform=notebook_transforms(s.img_size, False))
    g = torch.Generator().manual_seed(s.seed)
    pin = str(device).startswith("cuda")
    return (
        DataLoader(
            train, batch_size=s.batch_size, shuffle=True, num_workers=workers, generator=g, pin_memory=pin
        ),
        DataLoader(val, batch_size=s.batch_size, shuffle=False, num_workers=workers, pin_memory=pin),
    )


@dataclass(frozen=True)
class EpochClock:
    images: int
    seconds: float
    cpu_seconds: float
    data_wait: float  # share of the epoch spent waiting for the next batch


def notebook_epoch(model: Any, loader: Any, opt: Any, device: Any, max_batches: int | None) -> EpochClock:
    """One training epoch as the notebooks wrote it. The clock includes starting the
    loader's workers, which the notebooks pay every epoch."""
    import torch

    model.train()
    n, done, wait, batches = 0, 0, 0.0, iter(loader)
    _sync(device)
    t0, c0 = time.perf_counter(), cpu_clock()
    while max_batches is None or done < max_batches:
        t = time.perf_counter()
        x, y = next(batches, (None, None))
        wait += time.perf_counter() - t
        if x is None:
            break
        x, y = x.to(device), y.to(device)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss.item()  # the notebooks log the running loss every batch
        n += len(y)
        done += 1
    del batches  # joins the workers now, so their CPU time is counted
    _sync(device)
    sec = time.perf_counter() - t0
    return EpochClock(n, sec, cpu_clock() - c0, wait / sec)


def notebook_val_auc(model: Any, loader: Any, device: Any) -> float:
    import torch

    model.eval()
    probs, targets = [], []
    with torch.no_grad():
        for x, y in loader:
            probs.append(torch.softmax(model(x.to(device)), dim=1).cpu())
            targets.append(y)
    # The metric our runs report (core.train.metrics), so the two val AUCs compare like for like.
    from core.train.metrics import classification_metrics

    p = torch.cat(probs).numpy()
    return classification_metrics(torch.cat(targets).numpy(), p, [str(c) for c in range(p.shape[1])])["auc"]


def run_notebook(root: Path, s: Settings, device: Any, workers: int) -> Result:
    import contextlib

    import torch

    train, val = notebook_loaders(root, s, workers, device)
    model = notebook_model(s.seed, len(train.dataset.classes)).to(device)
    warm_up(model, device, s.batch_size, s.img_size, contextlib.nullcontext(), False)
    opt = torch.optim.Adam(model.parameters(), lr=s.lr)
    res = Result(f"notebooks (ImageFolder, {workers} workers, fp32)")
    if s.max_batches is not None:
        res.whole_epochs = False
        res.note = f"timed over the first {s.max_batches} batches of each epoch (--max-batches)"
    for epoch in range(s.epochs):
        clock = notebook_epoch(model, train, opt, device, s.max_batches)
        n, sec = clock.images, clock.seconds
        res.images.append(n)
        res.seconds.append(sec)
        res.cpu_seconds.append(clock.cpu_seconds)
        res.data_wait.append(clock.data_wait)
        res.val_auc.append(notebook_val_auc(model, val, device))
        print(
            f"  notebooks epoch {epoch + 1}/{s.epochs}: {n} images in {sec:.1f} s ({n / sec:.1f} images/s), "
            f"waiting for data {clock.data_wait:.1%}, val AUC {res.val_auc[-1]:.3f}",
            flush=True,
        )
    return res


def notebook_throughput(root: Path, s: Settings, device: Any, workers: int, batches: int) -> Result:
    """images/s of the notebooks' loop over ``batches`` batches on a throwaway model (no
    validation): a quick figure for another ``num_workers``."""
    import contextlib

    import torch

    train, _ = notebook_loaders(root, s, workers, device)
    model = notebook_model(s.seed, len(train.dataset.classes)).to(device)
    warm_up(model, device, s.batch_size, s.img_size, contextlib.nullcontext(), False)
    opt = torch.optim.Adam(model.parameters(), lr=s.lr)
    c = notebook_epoch(model, train, opt, device, batches)
    res = Result(
        f"notebooks (ImageFolder, {workers} workers, fp32)",
        [c.images],
        [c.seconds],
        cpu_seconds=[c.cpu_seconds],
    )
    res.data_wait, res.whole_epochs = [c.data_wait], False
    res.note = f"{batches} batches only, no validation"
    return res


# ---------------------------------------------------------------------------------------
# Ours: the real training code


def our_config(root: Path, s: Settings, device: str) -> Any:
    from core.config import RunConfig

    return RunConfig(
        data=str(root), format="imagefolder", arch="resnet18", in_channels=1, img_size=s.img_size,
        epochs=s.epochs, batch_size=s.batch_size, precision="auto", augment="light", device=device,
        optimizer="adam", lr=s.lr, weight_decay=0.0, schedule="none", loss="ce", seed=s.seed,
        name="bench-train-pipeline", pretrained="none",  # both ways start from the same random init
    )  # fmt: skip


def _our_model(config: Any) -> tuple[Any, Any, Any]:
    """Our model as the loop builds it (channels_last where the precision wants it) on the
    config's device, warmed up as ``warm_up`` does the notebooks': (model, device, precision)."""
    import torch

    from core.train.device import resolve_device, resolve_precision
    from core.train.loop import build_run_model

    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    model = build_run_model(config, 3).to(device)
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    warm_up(
        model, device, config.batch_size, config.img_size, precision.autocast(device), precision.channels_last
    )
    return model, device, precision


def our_warm_up(config: Any) -> Any:
    """Warms our step up as ``warm_up`` does the notebooks'; returns the precision used."""
    return _our_model(config)[2]


def _timed_trainer(*args: Any) -> Any:
    """``core.train.loop.Trainer`` that also records each training epoch's CPU time (what
    ``fit`` builds, plus one clock around ``train_one_epoch``)."""
    from core.train.loop import Trainer

    class TimedTrainer(Trainer):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            self.cpu_seconds: list[float] = []

        def train_one_epoch(self, epoch: int) -> dict[str, Any] | None:
            c0 = cpu_clock()
            metrics = super().train_one_epoch(epoch)
            self.cpu_seconds.append(cpu_clock() - c0)
            return metrics

    return TimedTrainer(*args)


def run_ours(root: Path, s: Settings, device: str, workspace: Path, label: str = "") -> tuple[Result, Any]:
    """``fit`` on a fresh workspace: the cache build is timed on its own, then the epochs
    (which read the cache); images/s and data-wait share come from the run's metric rows."""
    from core.train.data import prepare_data
    from core.train.reporter import FolderReporter, read_metrics

    config = our_config(root, s, device)
    t0 = time.perf_counter()
    data = prepare_data(config, workspace)
    cache_seconds = time.perf_counter() - t0
    precision = our_warm_up(config)
    run_dir = workspace / "runs" / f"bench-{device.replace(':', '')}"
    trainer = _timed_trainer(config, run_dir, FolderReporter(run_dir), workspace, data)
    trainer.fit()
    rows = read_metrics(run_dir)
    by = {(r.split, r.name, r.epoch): r.value for r in rows}
    n_train = len(data.splits["train"])
    name = f"ours (uint8 cache, {precision.name}{' + channels_last' if precision.channels_last else ''})"
    res = Result(label or name, cache_seconds=cache_seconds, cpu_seconds=trainer.cpu_seconds)
    for epoch in range(1, s.epochs + 1):
        ips = by[("train", "images_per_s", epoch)]
        n = n_train - (n_train % s.batch_size == 1)  # the loop drops a trailing batch of one
        res.images.append(n)
        res.seconds.append(n / ips)
        res.data_wait.append(by[("train", "data_wait_share", epoch)])
        res.val_auc.append(by.get(("val", "auc", epoch), math.nan))
        print(
            f"  ours epoch {epoch}/{s.epochs}: {n} images in {n / ips:.1f} s ({ips:.1f} images/s), "
            f"data wait {res.data_wait[-1]:.1%}, val AUC {res.val_auc[-1]:.3f}",
            flush=True,
        )
    return res, (config, data)


def profile_our_epoch(config: Any, data: Any, workspace: Path, rows: int = 18) -> str:
    """torch.profiler over one more training epoch of ours (a new Trainer, same data)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from core.train.loop import Trainer
    from core.train.reporter import FolderReporter

    run_dir = workspace / "runs" / "bench-profile"
    trainer = Trainer(config, run_dir, FolderReporter(run_dir), workspace, data)
    trainer.setup()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        metrics = trainer.train_one_epoch(0)
    head = (
        f"one profiled epoch of ours: {metrics['images_per_s']:.1f} images/s under the profiler, "
        f"data wait {metrics['data_wait_share']:.1%}"
    )
    return head + "\n" + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def model_alone(config: Any, steps: int = 10) -> float:
    """images/s of our model, precision and optimizer step on random tensors already on the
    device: the limit any input pipeline can reach."""
    import torch

    model, device, precision = _our_model(config)
    from core.train.optim import build_optimizer

    opt = build_optimizer(config.optimizer, model, lr=config.lr, weight_decay=config.weight_decay)  # as ours
    x = torch.rand(config.batch_size, 1, config.img_size, config.img_size, device=device)
    if precision.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 3, (config.batch_size,), device=device)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        with precision.autocast(device):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    return steps * config.batch_size / (time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------
# Report


def _fmt(value: float | None, spec: str, missing: str = "-") -> str:
    return (
        missing if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)
    )


COLUMNS = (("images/s", 9), ("epoch s", 8), ("cache build s", 14), ("data wait", 10), ("val AUC", 8),
           ("images/CPU-s", 13))  # fmt: skip


def table(results: list[Result]) -> str:
    head = f"{'pipeline':<46}" + "".join(f" {name:>{width}}" for name, width in COLUMNS)
    lines = [head, "-" * len(head)]
    for r in results:
        cells = (
            _fmt(r.images_per_s, ".1f"),
            _fmt(r.epoch_seconds, ".1f"),
            _fmt(r.cache_seconds, ".1f"),
            _fmt(float(np.mean(r.data_wait)) if r.data_wait else None, ".1%"),
            _fmt(r.val_auc[-1] if r.val_auc else None, ".3f"),
            _fmt(r.images_per_cpu_s, ".2f"),
        )
        lines.append(
            f"{r.name:<46}" + "".join(f" {c:>{w}}" for c, (_, w) in zip(cells, COLUMNS, strict=True))
        )
    notes = [f"  {r.name}: {r.note}" for r in results if r.note]
    return "\n".join(lines + (["notes:", *notes] if notes else []))


def verdicts(ours: Result, theirs: Result) -> list[str]:
    ratio = ours.images_per_s / theirs.images_per_s
    wait = float(np.mean(ours.data_wait))
    a, b = ours.val_auc[-1], theirs.val_auc[-1]

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    cpu_ratio = ours.images_per_cpu_s / theirs.images_per_cpu_s
    return [
        f"images per CPU-second, ours / notebooks': {cpu_ratio:.2f} (less sensitive to other jobs than images/s)",
        f"target images/s: ours >= {TARGET_RATIO:.0f}x the notebooks' -> {ratio:.2f}x: {verdict(ratio >= TARGET_RATIO)}",
        f"target data wait: <= {TARGET_WAIT:.0%} of our step time -> {wait:.1%}: {verdict(wait <= TARGET_WAIT)}",
        f"target val AUC: ours >= notebooks' - {AUC_TOLERANCE} (last epoch) -> {a:.3f} vs {b:.3f}: "
        f"{verdict(a >= b - AUC_TOLERANCE)}",
    ]


def environment() -> str:
    import platform

    import torch

    from core.train.device import cpu_has_native_bf16

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"torch {torch.__version__}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
        f"{platform.processor() or platform.machine()}, native bf16: {cpu_has_native_bf16()}, "
        f"CUDA: {torch.cuda.is_available()}, load average {load}"
    )


def warm_os_cache(root: Path) -> None:
    """Read every file once so both pipelines start from the same warm OS file cache."""
    for p in root.rglob("*.png"):
        p.read_bytes()


def gpu_section(root: Path, s: Settings, workspace: Path) -> list[str]:
    import torch

    if not torch.cuda.is_available():
        return ["GPU: skipped (torch.cuda.is_available() is False on this machine)"]
    print("GPU: the notebooks' way, ours and the model alone on cuda:0 ...", flush=True)
    theirs = run_notebook(root, s, torch.device("cuda:0"), 2)
    theirs.name = "notebooks on cuda:0 (2 workers, fp32)"
    ours, (config, _) = run_ours(root, s, "cuda:0", workspace, label="ours on cuda:0")
    limit = model_alone(config)
    return [
        f"GPU ({torch.cuda.get_device_name(0)}):",
        table([theirs, ours]),
        f"model alone on random tensors (the limit): {limit:.1f} images/s",
        f"GPU ratio: ours / notebooks' {ours.images_per_s / theirs.images_per_s:.2f}, "
        f"ours / limit {ours.images_per_s / limit:.2f}",
    ]


# ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--epochs", type=int, default=8,
        help="epochs of both pipelines (default 8: from scratch, val AUC after 2 epochs is noise)",
    )  # fmt: skip
    p.add_argument(
        "--data-dir", type=Path, default=DEFAULT_DATA, help=f"image folder, reused (default {DEFAULT_DATA})"
    )
    p.add_argument(
        "--max-batches",
        type=int,
        default=None,
        help="time the notebooks' way over only this many batches per epoch (default: whole epochs)",
    )
    p.add_argument(
        "--workers0-batches",
        type=int,
        default=8,
        help="batches for the quick num_workers=0 figure of the notebooks' way (0 = skip)",
    )
    p.add_argument(
        "--profile", action="store_true", help="profile one more epoch of ours with torch.profiler"
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    s = Settings(epochs=args.epochs, seed=args.seed, max_batches=args.max_batches)

    import torch

    print(environment(), flush=True)
    splits = ensure_images(args.data_dir.resolve(), args.seed, min(2, os.cpu_count() or 1))
    print(f"images: {sum(splits.values())} PNG 8-bit {SOURCE_SIZE}x{SOURCE_SIZE} in {args.data_dir} {splits}")
    print(
        f"settings: resnet18 (1-channel stem), {s.img_size} px, batch {s.batch_size}, Adam lr {s.lr}, "
        f"cross-entropy, {s.epochs} epochs, seed {s.seed}"
    )
    warm_os_cache(args.data_dir)
    cpu = torch.device("cpu")
    from core.train.allocator import allocator_state

    with tempfile.TemporaryDirectory(prefix="chestlab-bench-ws-") as ws:
        print("the notebooks' way ...", flush=True)
        assert allocator_state() is None, "the notebooks' way must run with glibc's default allocator"
        theirs = run_notebook(args.data_dir, s, cpu, 2)
        results = [theirs]
        if args.workers0_batches:
            results.append(notebook_throughput(args.data_dir, s, cpu, 0, args.workers0_batches))
        print("ours ...", flush=True)
        ours, (config, data) = run_ours(args.data_dir, s, "cpu", Path(ws))
        results.append(ours)
        limit = model_alone(config)
        extra = [
            f"model alone on random tensors (ours' precision, the limit on this CPU): {limit:.1f} images/s",
            f"allocator: the notebooks' way glibc's default; ours {allocator_state()}",
        ]
        if args.profile:
            extra.append(profile_our_epoch(config, data, Path(ws)))
        extra += gpu_section(args.data_dir, s, Path(ws))
    print()
    print(table(results))
    for line in [*extra, *verdicts(ours, theirs)]:
        print(line)
    print(f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"ratio: {ours.images_per_s / theirs.images_per_s:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
