"""Checkpoints: weights and training state, written atomically, loaded without pickle.

A checkpoint is a dict of tensors and plain values (state_dicts, the run config as a dict,
class names, normalisation), saved with ``torch.save`` through a temp file + fsync + rename
and read with ``torch.load(weights_only=True)``: a file that holds a pickled model object
(as one notebook saved) is refused with a clear message, never executed.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from core.errors import DataError, NotFoundError
from core.fileio import atomic_write

BEST = "best.pt"
LAST = "last.pt"


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    return atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise NotFoundError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        from models.pretrained import pickled_class

        raise DataError(
            f"{path}: holds pickled Python objects{pickled_class(exc)}, not plain weights; refusing to execute "
            "it (save model.state_dict() instead)"
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise DataError(f"{path}: not a readable PyTorch checkpoint ({str(exc).splitlines()[0][:160]})") from None
    if not isinstance(state, dict):
        raise DataError(f"{path}: expected a dict of weights, found {type(state).__name__}")
    return state


def model_state(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model's state_dict inside a ChestLab checkpoint, or the file itself when it is a
    bare state_dict."""
    inner = state.get("model", state)
    if not isinstance(inner, dict) or not all(isinstance(v, torch.Tensor) for v in inner.values()):
        raise DataError("checkpoint has no model state_dict (expected a 'model' entry of tensors)")
    return inner
