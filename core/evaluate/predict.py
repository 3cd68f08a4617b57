"""Load a run's trained model and predict: the one place that turns a checkpoint back
into a model, and an image into the tensor that model expects."""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from core.errors import NotFoundError
from core.train.checkpoint import BEST, LAST, load_checkpoint, model_state

_LOCK = threading.Lock()


@dataclass
class LoadedModel:
    run_id: str
    model: nn.Module
    config: Any  # RunConfig
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    single_logit: bool
    checkpoint: str  # path of the file loaded
    checkpoint_mtime: float
    device: torch.device

    @property
    def arch(self) -> str:
        return self.config.arch

    @property
    def img_size(self) -> int:
        return int(self.config.img_size)

    def to_input(self, images: np.ndarray | list[np.ndarray]) -> torch.Tensor:
        """uint8 grayscale image(s) (HxW, any size) -> a normalised (B, C, S, S) batch."""
        from core.data.images import resize_gray

        if isinstance(images, np.ndarray) and images.ndim == 2:
            images = [images]
        s = self.img_size
        batch = np.stack([resize_gray(im if im.ndim == 2 else im.mean(axis=2).astype(np.uint8), s) for im in images])
        x = torch.from_numpy(batch).unsqueeze(1).float().div_(255.0)
        if self.config.in_channels == 3:
            x = x.expand(-1, 3, -1, -1)
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return ((x - mean) / std).to(self.device)

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> np.ndarray:
        from core.train.loop import probabilities

        self.model.eval()
        return probabilities(self.model(x)).cpu().numpy()


def checkpoint_path(run_id: str, which: str = "best", workspace: Any = None) -> Path:
    """``best`` (falling back to ``last`` while a run has no best yet) or ``last``."""
    from core.runs import run_dir

    if which not in ("best", "last"):
        raise ValueError(f"checkpoint must be 'best' or 'last', got {which!r}")
    if not run_dir(run_id, workspace).exists():
        raise NotFoundError(f"no run {run_id!r} in this workspace (list them with: python -m core runs)")
    folder = run_dir(run_id, workspace) / "checkpoints"
    names = [BEST, LAST] if which == "best" else [LAST]
    for name in names:
        if (folder / name).exists():
            return folder / name
    raise NotFoundError(f"run {run_id} has no checkpoint yet in {folder} (it has not finished an epoch)")


def load_run_model(run_id: str, which: str = "best", workspace: Any = None, device: str = "cpu") -> LoadedModel:
    from core.config import RunConfig
    from core.train.allocator import tune_allocator
    from core.train.loop import build_run_model

    path = checkpoint_path(run_id, which, workspace)
    tune_allocator()  # a loaded model runs many forward passes here (predictions, CAMs)
    with _LOCK:
        state = load_checkpoint(path)
        config = RunConfig.from_dict(state["config"]).replace(pretrained="none")
        classes = list(state["classes"])
        single = bool(state.get("single_logit", False))
        model = build_run_model(config, 1 if single else len(classes))
        model.load_state_dict(model_state(state))
        dev = torch.device(device)
        model.to(dev).eval()
        norm = state.get("normalization") or {}
    return LoadedModel(
        run_id=run_id, model=model, config=config, classes=classes,
        mean=tuple(norm.get("mean", (0.449,))), std=tuple(norm.get("std", (0.226,))),
        single_logit=single, checkpoint=str(path), checkpoint_mtime=os.path.getmtime(path), device=dev,
    )
