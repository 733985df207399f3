"""Precision: what ``train.precision=auto`` means on this hardware (and what a launcher asked
for), and the autocast context the losses run under."""
from __future__ import annotations

import contextlib
import functools
import os
import warnings
from typing import Any

import torch
from accelerate import Accelerator

from ganforge.errors import ConfigError
from ganforge.recipe.validate import PRECISIONS

__all__ = ["AUTOCAST_DTYPES", "autocast_factory", "launcher_precision", "native_cpu_bf16", "resolve_precision"]


def native_cpu_bf16() -> bool:
    """Whether this CPU computes bf16 itself (AVX-512 BF16 or AMX); elsewhere it is emulated."""
    checks = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(check is not None and check() for check in checks)


def resolve_precision(setting: str, device_type: str, sample_shape: tuple[int, ...] | None) -> str:
    """``train.precision=auto``: bf16 autocast for images on a CUDA GPU with native bf16 (an
    8-bit mantissa is plenty for pixels, and tensor cores run bf16 at ~15x their fp32 rate) or
    on a CPU with native bf16; fp32 on other CPUs (emulated bf16 was 28x slower on this
    project's AVX2 machine) and for vector data such as the 2-D mixtures, whose modes (sigma
    0.01 at radius 1) bf16 cannot resolve (its spacing near 1.0 is 0.0078). Other settings
    are returned unchanged."""
    if setting != "auto":
        return setting
    if sample_shape is None or len(sample_shape) != 3:
        return "no"
    if device_type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    return "bf16" if native_cpu_bf16() else "no"


def launcher_precision(setting: str) -> str | None:
    """``accelerate launch --mixed_precision X`` (or its config file) sets
    ``ACCELERATE_MIXED_PRECISION``. With ``train.precision=auto`` a launcher asking for bf16 or
    fp16 is followed; an explicit recipe setting wins, and a launcher asking for another one is
    reported. ``no`` is what every accelerate config holds unless told otherwise, so it leaves
    the choice to the recipe."""
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION", "").strip().lower()
    if launcher in ("", "no"):
        return None
    if launcher not in PRECISIONS or launcher == "auto":
        raise ConfigError(f"ACCELERATE_MIXED_PRECISION={launcher} (from accelerate launch) is not one of "
                          f"no, bf16, fp16")
    main = os.environ.get("RANK", "0") == "0"
    if setting == "auto":
        if main:
            print(f"train.precision=auto: following the launcher's --mixed_precision {launcher}")
        return launcher
    if setting != launcher and main:
        warnings.warn(f"the launcher asks for --mixed_precision {launcher} but the recipe's train.precision is "
                      f"'{setting}', which is used; set train.precision=auto to follow the launcher")
    return None


#: The autocast dtype of each mixed-precision setting (``no`` has none).
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_factory(acc: Accelerator, cache: bool = True) -> Any:
    """What ``acc.autocast()`` gives, without its cost per call: Accelerate rebuilds its autocast
    arguments on every call, clearing and restoring ``os.environ`` when a handler is set
    (~2 ms per step on this project's CPU, found with cProfile). ``cache=False`` for capture."""
    dtype = AUTOCAST_DTYPES.get(acc.mixed_precision)
    if dtype is None:
        return contextlib.nullcontext
    return functools.partial(torch.autocast, acc.device.type, dtype=dtype, cache_enabled=cache)
