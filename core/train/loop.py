"""The one training loop: every architecture, every loss and sampler, CPU or CUDA.

``fit`` is split as torchvision's reference script does (``train_one_epoch``,
``evaluate``), with the state that a resume needs kept in one ``TrainState``.
"""
from __future__ import annotations

import logging
import math
import random
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from core.config import RunConfig
from core.progress import no_progress
from core.train.checkpoint import BEST, LAST, load_checkpoint, save_checkpoint
from core.train.data import Feeder, SplitData, TrainingData, prepare_data
from core.train.device import Precision, device_summary, resolve_device, resolve_precision
from core.train.metrics import classification_metrics, is_better, scalar_items
from core.train.reporter import MetricRow, Reporter

log = logging.getLogger(__name__)

STEP_LOG_EVERY = 10  # batches between "batch_loss" rows


@dataclass
class TrainState:
    epoch: int = 0  # the epoch in progress (or next to start)
    batch_in_epoch: int = 0  # batches of ``epoch`` already done (a mid-epoch checkpoint)
    step: int = 0  # optimizer steps so far
    best_value: float | None = None
    best_epoch: int = -1
    best_metrics: dict[str, float] = field(default_factory=dict)
    bad_epochs: int = 0
    elapsed: float = 0.0


@dataclass
class FitResult:
    status: str  # "done" or "cancelled"
    best: dict[str, float]
    test: dict[str, Any]
    best_epoch: int
    classes: list[str]


class _Stop:
    """Set by SIGTERM/SIGINT or a cancel request; the loop checkpoints and returns."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self.signalled = False

    def __call__(self) -> bool:
        return self.signalled or self.reporter.should_stop()

    def install(self) -> None:
        def handler(signum: int, frame: Any) -> None:
            self.signalled = True

        try:
            signal.signal(signal.SIGTERM, handler)
        except ValueError:  # not the main thread (tests); cancel still works via the reporter
            pass


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_run_model(config: RunConfig, n_outputs: int) -> nn.Module:
    from models import build_model

    pretrained = None if config.pretrained in ("", "none") else config.pretrained
    return build_model(config.arch, n_outputs, config.in_channels, pretrained)


def head_prefixes(arch: str) -> tuple[str, ...]:
    from models import get_arch

    return tuple(get_arch(arch).head)


def apply_freeze(model: nn.Module, config: RunConfig, epoch: int) -> bool:
    """Freeze everything but the head when the policy says so for this epoch. Returns
    whether the backbone is frozen."""
    frozen = config.freeze == "backbone" or (config.freeze == "epochs" and epoch < config.freeze_epochs)
    heads = head_prefixes(config.arch)
    for name, p in model.named_parameters():
        p.requires_grad_(not frozen or name.startswith(heads))
    return frozen


def _set_train_mode(model: nn.Module, frozen: bool, heads: tuple[str, ...]) -> None:
    model.train()
    if frozen:
        # Frozen layers keep their BatchNorm statistics too (a frozen backbone is a fixed
        # feature extractor), as transfer-learning notebooks intend.
        for name, m in model.named_modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and not name.startswith(heads):
                m.eval()


def epoch_batches(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """An epoch's batches; a trailing batch of one is dropped (BatchNorm cannot train on it)."""
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if len(batches) > 1 and len(batches[-1]) < 2:
        batches = batches[:-1]
    return batches


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    logits = logits.float()
    if logits.ndim == 2 and logits.shape[1] > 1:
        return logits.softmax(dim=1)
    p = torch.sigmoid(logits.reshape(-1))
    return torch.stack([1 - p, p], dim=1)


def compute_loss(criterion: nn.Module, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return criterion(logits.float(), y)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    feeder: Feeder,
    criterion: nn.Module,
    precision: Precision,
    classes: list[str],
    batch_size: int,
) -> tuple[dict[str, Any], np.ndarray]:
    """Metrics of ``model`` on the feeder's split, and the (N, K) probabilities."""
    model.eval()
    n = len(feeder.split)
    probs, losses = [], []
    for start in range(0, n, batch_size):
        pos = np.arange(start, min(start + batch_size, n))
        x, y = feeder.batch(pos)
        with precision.autocast(feeder.device):
            logits = model(x)
        losses.append(compute_loss(criterion, logits, y).item() * len(pos))
        probs.append(probabilities(logits).cpu())
    p = torch.cat(probs).numpy() if probs else np.zeros((0, len(classes)))
    metrics = classification_metrics(feeder.split.targets, p, classes)
    metrics["loss"] = float(sum(losses) / max(n, 1))
    return metrics, p


class Trainer:
    def __init__(self, config: RunConfig, run_dir: Path, reporter: Reporter, workspace: Any = None,
                 data: TrainingData | None = None) -> None:
        self.config, self.run_dir, self.reporter, self.workspace = config, Path(run_dir), reporter, workspace
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        self.stop = _Stop(reporter)
        self._data = data
        self._gen_state: torch.Tensor | None = None

    # -- setup --------------------------------------------------------------------------

    def setup(self) -> None:
        from core.train.allocator import tune_allocator
        from core.train.augment import build_augment
        from core.train.losses import build_loss, get_loss
        from core.train.optim import build_optimizer, build_schedule, param_groups
        from core.train.samplers import build_sampler

        c = self.config
        self.allocator = tune_allocator()
        seed_everything(c.seed)
        self.device = resolve_device(c.device)
        self.precision = resolve_precision(c.precision, self.device)
        self.data = self._data or prepare_data(c, self.workspace, progress=self._cache_progress)
        self.classes = self.data.classes
        spec = get_loss(c.loss)
        self.built_loss = build_loss(c.loss, self.data.train_counts, c.loss_params)
        self.criterion = self.built_loss.criterion.to(self.device)
        n_out = 1 if spec.single_logit else len(self.classes)
        torch.manual_seed(c.seed)
        self.model = build_run_model(c, n_out).to(self.device)
        if self.precision.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.sampler = build_sampler(c.sampler, self.data.splits["train"].targets, c.sampler_params, c.seed)
        self.steps_per_epoch = len(epoch_batches(self.sampler.indices(0), c.batch_size))
        self.optimizer = build_optimizer(
            c.optimizer, param_groups(self.model, c.weight_decay), lr=c.lr, weight_decay=c.weight_decay,
            momentum=c.momentum, nesterov=c.nesterov,
        )
        self.schedule = build_schedule(
            c.schedule, self.optimizer, epochs=c.epochs, steps_per_epoch=self.steps_per_epoch,
            warmup_epochs=c.warmup_epochs, step_size=c.step_size, gamma=c.gamma,
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision.use_scaler)
        self.augment = build_augment(c.augment, img_size=c.img_size, seed=c.seed)
        feed = dict(device=self.device, in_channels=c.in_channels, mean=self.data.mean, std=self.data.std,
                    channels_last=self.precision.channels_last)
        self.feeders = {s: Feeder(self.data.cache, d, **feed) for s, d in self.data.splits.items() if len(d)}
        self.state = TrainState()

    def _cache_progress(self, done: int, total: int, message: str) -> None:
        self.reporter.progress(0.0, 0, 0, f"{message} {done}/{total}")

    def record_setup(self) -> None:
        d = self.data
        self.reporter.set_info(
            classes=self.classes,
            device=device_summary(self.device),
            precision=self.precision.name,
            allocator=self.allocator,
            n_images={s: len(v) for s, v in d.splits.items()},
            train_class_counts=d.train_counts,
            loss_weights=self.built_loss.weights_used,
            sampler=self.sampler.summary,
            normalization={"mean": list(d.mean), "std": list(d.std)},
            skipped_images=d.skipped[:200],
            n_skipped_images=len(d.skipped),
            n_parameters=sum(p.numel() for p in self.model.parameters()),
            steps_per_epoch=self.steps_per_epoch,
        )
        for f in d.skipped[:20]:
            log.warning("skipped %s: %s", f["path"], f["reason"])

    # -- checkpoints --------------------------------------------------------------------

    def _checkpoint(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "train_state": asdict(self.state),
            "torch_rng": torch.get_rng_state(),
            "augment_rng": self._gen_state if self._gen_state is not None else torch.empty(0, dtype=torch.uint8),
            "config": self.config.to_dict(),
            "classes": list(self.classes),
            "normalization": {"mean": list(self.data.mean), "std": list(self.data.std)},
            "single_logit": self.built_loss_single_logit,
        }

    @property
    def built_loss_single_logit(self) -> bool:
        from core.train.losses import get_loss

        return bool(get_loss(self.config.loss).single_logit)

    def save(self, name: str) -> None:
        save_checkpoint(self.ckpt_dir / name, self._checkpoint())

    def try_resume(self) -> bool:
        path = self.ckpt_dir / LAST
        if not path.exists():
            return False
        ck = load_checkpoint(path, map_location=self.device)
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.schedule.load_state_dict(ck["schedule"])
        self.scaler.load_state_dict(ck["scaler"])
        self.state = TrainState(**ck["train_state"])
        torch.set_rng_state(ck["torch_rng"].cpu())
        gen_state = ck.get("augment_rng")
        self._gen_state = gen_state.cpu() if gen_state is not None and gen_state.numel() else None
        log.info("resumed from %s at epoch %d, batch %d", path, self.state.epoch, self.state.batch_in_epoch)
        return True

    # -- the loop -----------------------------------------------------------------------

    def epoch_generator(self, epoch: int) -> torch.Generator:
        g = torch.Generator(device=self.device if self.device.type == "cuda" else "cpu")
        g.manual_seed(self.config.seed * 100_003 + epoch)
        return g

    def train_one_epoch(self, epoch: int) -> dict[str, Any] | None:
        """Trains one epoch (from ``state.batch_in_epoch``); None when stopped mid-way."""
        c, st = self.config, self.state
        frozen = apply_freeze(self.model, c, epoch)
        heads = head_prefixes(c.arch)
        _set_train_mode(self.model, frozen, heads)
        feeder = self.feeders["train"]
        order = self.sampler.indices(epoch)
        gen = self.epoch_generator(epoch)
        if st.batch_in_epoch and self._gen_state is not None:
            # A mid-epoch resume continues the augmentation stream where it stopped.
            gen.set_state(self._gen_state)
        batches = epoch_batches(order, c.batch_size)
        targets, probs, loss_sum, n_seen = [], [], 0.0, 0
        data_time = compute_time = 0.0
        t_epoch = time.perf_counter()
        for bi in range(st.batch_in_epoch, len(batches)):
            if self.stop():
                st.batch_in_epoch = bi
                self._gen_state = gen.get_state()
                return None
            t0 = time.perf_counter()
            x, y = feeder.batch(batches[bi], self.augment if c.augment != "none" else None, gen)
            t1 = time.perf_counter()
            with self.precision.autocast(self.device):
                logits = self.model(x)
            loss = compute_loss(self.criterion, logits, y)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if c.grad_clip > 0:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.schedule.step()
            st.step += 1
            lv = loss.item()
            if not math.isfinite(lv):
                raise FloatingPointError(f"loss became {lv} at epoch {epoch + 1}, step {st.step}; lower the learning rate")
            t2 = time.perf_counter()
            data_time += t1 - t0
            compute_time += t2 - t1
            targets.append(y.cpu())
            probs.append(probabilities(logits.detach()).cpu())
            loss_sum += lv * len(y)
            n_seen += len(y)
            if st.step % STEP_LOG_EVERY == 0:
                self.reporter.log_metrics([MetricRow(epoch + 1, st.step, "train", "batch_loss", lv)])
            done = epoch * len(batches) + bi + 1
            self.reporter.progress(done / (c.epochs * len(batches)), epoch + 1, st.step,
                                   f"epoch {epoch + 1}/{c.epochs} batch {bi + 1}/{len(batches)} loss {lv:.4f}")
        st.batch_in_epoch = 0
        wall = time.perf_counter() - t_epoch
        y_all = torch.cat(targets).numpy() if targets else np.zeros(0, dtype=np.int64)
        p_all = torch.cat(probs).numpy() if probs else np.zeros((0, len(self.classes)))
        metrics = classification_metrics(y_all, p_all, self.classes) if n_seen else {}
        metrics["loss"] = loss_sum / max(n_seen, 1)
        metrics["lr"] = float(self.optimizer.param_groups[0]["lr"])
        metrics["images_per_s"] = n_seen / wall if wall > 0 else 0.0
        metrics["data_wait_share"] = data_time / max(data_time + compute_time, 1e-9)
        return metrics

    def fit(self, resume: bool = False) -> FitResult:
        c = self.config
        self.stop.install()
        self.setup()
        self.record_setup()
        if resume:
            self.try_resume()
        st = self.state
        t_start = time.time() - st.elapsed
        while st.epoch < c.epochs:
            epoch = st.epoch
            train_metrics = self.train_one_epoch(epoch)
            st.elapsed = time.time() - t_start
            if train_metrics is None:
                self.save(LAST)
                return self._finish("cancelled")
            val_metrics, _ = self._evaluate("val")
            self._log_epoch(epoch, train_metrics, val_metrics)
            value = val_metrics.get(c.monitor, math.nan)
            st.epoch = epoch + 1
            if is_better(c.monitor, value, st.best_value):
                st.best_value, st.best_epoch, st.bad_epochs = float(value), epoch + 1, 0
                st.best_metrics = {f"val_{k}": v for k, v in scalar_items(val_metrics).items() if "/" not in k}
                self.save(BEST)
            else:
                st.bad_epochs += 1
            self.save(LAST)
            log.info("epoch %d/%d: train loss %.4f, val loss %.4f, val %s %.4f (best %.4f at epoch %d)",
                     epoch + 1, c.epochs, train_metrics["loss"], val_metrics["loss"], c.monitor, value,
                     st.best_value if st.best_value is not None else math.nan, st.best_epoch)
            if c.early_stopping and st.bad_epochs >= c.early_stopping:
                log.info("early stopping: val %s has not improved for %d epochs", c.monitor, st.bad_epochs)
                break
            if self.stop():
                return self._finish("cancelled")
        return self._finish("done")

    def _evaluate(self, split: str) -> tuple[dict[str, Any], np.ndarray]:
        return evaluate(self.model, self.feeders[split], self.criterion, self.precision, self.classes,
                        self.config.batch_size * 2)

    def _log_epoch(self, epoch: int, train: dict[str, Any], val: dict[str, Any]) -> None:
        now = time.time()
        rows = [MetricRow(epoch + 1, self.state.step, "train", k, v, now) for k, v in scalar_items(train).items()]
        rows += [MetricRow(epoch + 1, self.state.step, "val", k, v, now) for k, v in scalar_items(val).items()]
        self.reporter.log_metrics(rows)
        self.reporter.set_info(val_confusion_matrix=val.get("confusion_matrix"), last_epoch=epoch + 1)

    def _finish(self, status: str) -> FitResult:
        st = self.state
        test: dict[str, Any] = {}
        if status == "done":
            if (self.ckpt_dir / BEST).exists():
                self.model.load_state_dict(load_checkpoint(self.ckpt_dir / BEST, self.device)["model"])
            for split in ("val", "test"):
                if split in self.feeders:
                    metrics, p = self._evaluate(split)
                    write_predictions(self.run_dir / f"predictions_{split}.csv", self.data.splits[split], p,
                                      self.classes)
                    if split == "test":
                        test = metrics
                        rows = [MetricRow(st.best_epoch, st.step, "test", k, v) for k, v in scalar_items(metrics).items()]
                        self.reporter.log_metrics(rows)
        best = dict(st.best_metrics)
        best["best_epoch"] = st.best_epoch
        return FitResult(status, best, test, st.best_epoch, list(self.classes))


def write_predictions(path: Path, split: SplitData, probs: np.ndarray, classes: list[str]) -> None:
    from core.fileio import atomic_write_bytes

    df = pd.DataFrame({"path": split.paths, "target": split.targets, "pred": probs.argmax(axis=1)})
    df["true_class"] = [classes[i] for i in df["target"]]
    df["pred_class"] = [classes[i] for i in df["pred"]]
    for k, name in enumerate(classes):
        df[f"prob/{name}"] = probs[:, k]
    atomic_write_bytes(path, df.to_csv(index=False).encode())


def fit(config: RunConfig, run_dir: Path, reporter: Reporter, *, resume: bool = False, workspace: Any = None,
        data: TrainingData | None = None) -> FitResult:
    return Trainer(config, run_dir, reporter, workspace, data).fit(resume=resume)


__all__ = ["FitResult", "Trainer", "TrainState", "evaluate", "fit", "no_progress"]
