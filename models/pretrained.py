"""Pretrained weights: ImageNet through the torch hub cache, or a state_dict file the user
names, fitted to the model (stem summed over RGB for 1-channel input, head left fresh when
the class count differs). Everything is read with ``torch.load(weights_only=True)``: a file
holding a pickled model object is refused, never executed.

ImageNet weights live where torchvision's weights API puts them,
``torch.hub.get_dir()/checkpoints/<file name from the url>``. When the file is missing we
try one download there with short timeouts (a machine with a network behaves like every
notebook); when that fails the error says which file to put where. Nothing falls back to
random weights silently. ``CHESTLAB_OFFLINE=1`` skips the download attempt (air-gapped
machines, and the test suite, which must never download).
"""

from __future__ import annotations

import http.client
import logging
import os
import pickle
import re
import socket
import sys
import threading
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.error import URLError
from urllib.parse import urlparse

import torch
from torch import nn

if TYPE_CHECKING:
    from models.registry import ArchSpec

log = logging.getLogger(__name__)

NETWORK_TIMEOUT_S = 8.0
OFFLINE_ENV = "CHESTLAB_OFFLINE"
StateDict = dict[str, torch.Tensor]


class PretrainedWeightsUnavailable(RuntimeError):
    """ImageNet weights are neither in the torch hub cache nor downloadable; the message
    says which file to put where."""


class WeightsFileError(ValueError):
    """A weights file that cannot be used: missing, not a state_dict, a pickled object, or
    tensors that do not fit the architecture. The message names the file."""


@dataclass(frozen=True)
class PretrainedStatus:
    available: bool
    path: str
    url: str
    size_mb: float | None
    message: str


def pretrained_status(name: str) -> PretrainedStatus:
    from models.registry import get_arch

    spec = get_arch(name)
    if spec.imagenet_weights is None:
        return PretrainedStatus(
            False, "", "", None, f"{name} has no ImageNet weights; choose none or a weights file"
        )
    url = spec.imagenet_weights.url
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
    size = spec.imagenet_weights.meta.get("_file_size")
    if path.is_file():
        message = f"ImageNet weights for {name} are in the torch hub cache: {path}"
    else:
        size_text = f" ({size:.0f} MB)" if size else ""
        message = (
            f"ImageNet weights for {name} are not in the torch hub cache; with a network they download "
            f"on first use{size_text}, offline put {path.name} (from {url}) at {path}, "
            "or name a weights file, or choose none"
        )
    return PretrainedStatus(path.is_file(), str(path), url, size, message)


def load_pretrained(model: nn.Module, spec: ArchSpec, source: str) -> list[str]:
    """Load "imagenet" or a state_dict file into ``model``; returns the names of tensors
    left at their fresh initialisation (a replaced head, DRENet's FPN for ImageNet)."""
    if source.lower() == "imagenet":
        state, label = imagenet_state_dict(spec), f"ImageNet weights for {spec.name}"
    else:
        state, label = read_state_dict(Path(source).expanduser()), source
    fresh = fit_state_dict(model, spec, state, label)
    log.info("loaded %s into %s; left fresh: %s", label, spec.name, ", ".join(fresh) or "nothing")
    return fresh


def imagenet_state_dict(spec: ArchSpec) -> StateDict:
    return read_state_dict(fetch_imagenet(spec.name))


def fetch_imagenet(name: str) -> Path:
    """The hub cache's file of ``name``'s ImageNet weights, downloaded first when missing;
    PretrainedWeightsUnavailable (saying which file to put where) when it cannot be had."""
    status = pretrained_status(name)
    if not status.url:
        raise PretrainedWeightsUnavailable(status.message)
    if not status.available:
        try:
            download_weights(status.url, Path(status.path))
        # URLError, timeouts, TLS errors are OSErrors; a cut transfer is an HTTPException; a bad hash a RuntimeError
        except (OSError, http.client.HTTPException, RuntimeError) as exc:
            raise PretrainedWeightsUnavailable(f"{status.message} (download failed: {exc})") from None
    return Path(status.path)


def check_pretrained(name: str, source: str | None) -> None:
    """Before a run is started: the weights it asks for are there (ImageNet: in the hub
    cache, downloaded now if missing; a file: a readable state_dict). Raises
    PretrainedWeightsUnavailable or WeightsFileError with what to do."""
    if not source or source.lower() == "none":
        return
    if source.lower() == "imagenet":
        fetch_imagenet(name)
    else:
        read_state_dict(Path(source).expanduser())


def download_weights(url: str, dest: Path, timeout: float = NETWORK_TIMEOUT_S) -> None:
    """Download into the hub cache as torchvision would, but never hang: an unreachable
    host fails within ``timeout``, and so does a stalled transfer (socket timeout)."""
    if os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no"):
        raise URLError(f"{OFFLINE_ENV} is set: no download attempted")
    if not _reachable(url, timeout):
        raise URLError(f"cannot reach {urlparse(url).hostname} within {timeout:g} s")
    dest.parent.mkdir(parents=True, exist_ok=True)
    match = re.search(r"-([a-f0-9]{6,})\.", dest.name)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)  # urllib inherits it; download_url_to_file takes none
    try:
        torch.hub.download_url_to_file(
            url, str(dest), match.group(1) if match else None, progress=sys.stderr.isatty()
        )
    finally:
        socket.setdefaulttimeout(previous)


def _reachable(url: str, timeout: float) -> bool:
    """A TCP connection to the host (or its proxy) within ``timeout``. Runs in a thread
    because name resolution ignores socket timeouts."""
    parts = urlparse(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        parts = urlparse(proxy if "://" in proxy else f"http://{proxy}")
    address = (parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))
    result: list[bool] = []

    def attempt() -> None:
        try:
            socket.create_connection(address, timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def read_state_dict(path: Path) -> StateDict:
    if not path.is_file():
        raise WeightsFileError(f"{path}: no such weights file (give a state_dict file, imagenet or none)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise WeightsFileError(
            f"{path} holds a pickled model object{pickled_class(exc)}, not a state_dict; refusing to execute it"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        raise WeightsFileError(f"{path} is not a readable PyTorch weights file ({exc})") from None
    return _as_state_dict(obj, path)


def pickled_class(exc: pickle.UnpicklingError) -> str:
    """`` (module.Class)`` of the object ``torch.load(weights_only=True)`` refused, or ""
    (torch's own message is a page of advice with terminal colour codes)."""
    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    return f" ({found.group(1)})" if found else ""


def _as_state_dict(obj: object, path: Path) -> StateDict:
    """Accept a bare state_dict or a checkpoint dict that holds one (ours, Lightning's, the
    common ``{"model": ...}``); strip DataParallel's ``module.`` prefix."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        kind = f"a dict with keys {list(obj)[:5]}" if isinstance(obj, dict) else type(obj).__name__
        raise WeightsFileError(f"{path} holds {kind}, not a state_dict of tensors")
    if all(k.startswith("module.") for k in obj):
        obj = {k.removeprefix("module."): v for k, v in obj.items()}
    return obj


def fit_state_dict(model: nn.Module, spec: ArchSpec, state: StateDict, label: str) -> list[str]:
    target = model.state_dict()
    if spec.key_fix is not None:
        state = spec.key_fix(state)
    if spec.weights_prefix and not target.keys() & state.keys():
        state = {spec.weights_prefix + k: v for k, v in state.items()}
    state = _adapt_first_conv(state, f"{spec.first_conv}.weight", target)
    kept: StateDict = {}
    for key, value in state.items():
        if key not in target:
            continue  # e.g. the ImageNet fc when only DRENet's ResNet body is filled
        if value.shape != target[key].shape:
            if not _under(key, spec.head):
                raise WeightsFileError(
                    f"{label}: {key} has shape {tuple(value.shape)}, {spec.name} needs {tuple(target[key].shape)}"
                )
            continue
        kept[key] = value
    # Checkpoints older than PyTorch 0.4.1 (the published DenseNets) have no BatchNorm counters.
    missing = [
        k
        for k in target
        if k not in kept and not _under(k, spec.head) and not k.endswith(".num_batches_tracked")
    ]
    if missing:
        raise WeightsFileError(
            f"{label} does not fit {spec.name}: {len(missing)} of its tensors are missing, e.g. {missing[:3]}"
        )
    model.load_state_dict(kept, strict=False)
    return [k for k in target if k not in kept]


def _adapt_first_conv(state: StateDict, key: str, target: StateDict) -> StateDict:
    """RGB stem -> gray: sum over the input channels, so a gray image gives the response of
    the same image fed as three equal channels. Gray -> RGB: the mean, the same identity."""
    weight = state.get(key)
    if weight is None or key not in target or weight.dim() != 4:
        return state
    have, need = weight.shape[1], target[key].shape[1]
    if have == 3 and need == 1:
        weight = weight.sum(dim=1, keepdim=True)
    elif have == 1 and need == 3:
        weight = weight.repeat(1, 3, 1, 1) / 3
    return {**state, key: weight}


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)
