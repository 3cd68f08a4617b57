"""Devices and numeric precision, by the book.

``auto`` picks the first CUDA device, else the CPU. Precision ``auto`` means bf16 autocast
(+ channels_last) on CPUs with native bf16 (AVX512-BF16 / AMX) and on CUDA devices that
support bf16, fp16 autocast with a GradScaler on older GPUs, and fp32 elsewhere.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch

from core.errors import ConfigError


@dataclass(frozen=True)
class Precision:
    name: str  # "fp32", "bf16" or "fp16"
    autocast_dtype: torch.dtype | None
    use_scaler: bool  # fp16 on CUDA needs loss scaling; bf16 does not
    channels_last: bool

    def autocast(self, device: torch.device) -> Any:
        if self.autocast_dtype is None:
            return torch.autocast(device.type, enabled=False)
        return torch.autocast(device.type, dtype=self.autocast_dtype)


def resolve_device(spec: str) -> torch.device:
    """``auto``, ``cpu``, ``cuda``, ``cuda:N`` -> a usable torch.device, or one clear error."""
    if spec == "auto":
        return torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {spec!r}: CUDA is not available on this machine "
                f"(torch {torch.__version__}, no NVIDIA GPU visible); use --device cpu or auto"
            )
        index = int(spec.split(":")[1]) if ":" in spec else 0
        n = torch.cuda.device_count()
        if index >= n:
            raise ConfigError(f"device {spec!r}: this machine has {n} CUDA device(s) (cuda:0..cuda:{n - 1})")
        return torch.device(f"cuda:{index}")
    if spec == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ConfigError("device 'mps': Apple's Metal backend is not available on this machine")
        return torch.device("mps")
    raise ConfigError(f"device {spec!r} unknown; valid: auto, cpu, cuda, cuda:N")


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
        if " avx512_bf16" in flags or " amx_bf16" in flags:
            return True
    except OSError:
        pass
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return bool(probe and probe())


def resolve_precision(spec: str, device: torch.device) -> Precision:
    if spec == "fp32":
        return Precision("fp32", None, False, False)
    if device.type == "cuda":
        bf16_ok = torch.cuda.is_bf16_supported()
        if spec == "bf16" or (spec == "auto" and bf16_ok):
            if not bf16_ok:
                raise ConfigError(f"precision 'bf16': {torch.cuda.get_device_name(device)} does not support bf16; use fp16")
            return Precision("bf16", torch.bfloat16, False, True)
        return Precision("fp16", torch.float16, True, True)
    if device.type == "cpu":
        if spec == "fp16":
            raise ConfigError("precision 'fp16' needs a CUDA device; on CPU use bf16 or fp32")
        if spec == "bf16" or (spec == "auto" and cpu_has_native_bf16()):
            return Precision("bf16", torch.bfloat16, False, True)
        return Precision("fp32", None, False, False)
    if spec in ("auto", "fp32"):
        return Precision("fp32", None, False, False)
    return Precision(spec, torch.float16 if spec == "fp16" else torch.bfloat16, False, False)


def device_summary(device: torch.device) -> dict[str, Any]:
    """What the run records and the Train page shows about its device."""
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return {
            "device": str(device),
            "name": torch.cuda.get_device_name(device),
            "memory_total_gb": round(total / 2**30, 2),
            "memory_free_gb": round(free / 2**30, 2),
        }
    import os
    import platform

    return {"device": str(device), "name": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "cores": os.cpu_count()}
