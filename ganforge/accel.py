"""Accelerate and precision: the Accelerator a run uses, what ``train.precision=auto`` means
on this hardware, the autocast context of the losses, and the lock that keeps one run per
output folder."""
from __future__ import annotations

import contextlib
import functools
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration

from ganforge.config import Recipe
from ganforge.errors import ConfigError, GanforgeError

__all__ = ["AUTOCAST_DTYPES", "RunLock", "autocast_factory", "make_accelerator", "native_cpu_bf16",
           "prepare_networks", "resolve_precision"]


_TRAP = (
    "WORLD_SIZE={world} but Accelerate sees a single process, so each process would train "
    "alone and all would write the same output folder (this is what `accelerate launch "
    "--multi_gpu` does on a machine without GPUs). On CPUs launch with ACCELERATE_USE_CPU=1 "
    "accelerate launch --config_file recipes/accelerate/cpu_2proc.yaml -m ganforge train RECIPE"
)


def _world_size() -> int:
    raw = os.environ.get("WORLD_SIZE", "1") or "1"
    if not raw.strip().isdigit() or int(raw) < 1:
        raise ConfigError(f"the environment variable WORLD_SIZE={raw!r} is not a number of processes; "
                          f"unset it, or launch with accelerate launch / torchrun, which set it")
    return int(raw)


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


def busy_cores(seconds: float = 0.3) -> float:
    """How many cores other work keeps busy now: /proc/stat sampled over ``seconds`` (Linux;
    elsewhere the 1-minute load average)."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
        return sum(values), idle

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    cores = os.cpu_count() or 1
    return cores * (1 - (idle1 - idle0) / max(1, total1 - total0))


def choose_threads(setting: int | str, device_type: str) -> tuple[int | None, str | None]:
    """``train.threads``: a number, or ``auto``. Auto leaves torch's setting alone when
    ``OMP_NUM_THREADS`` is set (by the user or a launcher: torchrun sets 1) and on GPUs; on a
    CPU it uses the cores that other work leaves idle, at least one (torch's default, one per
    core, collapses next to a busy process: 7x slower on a 2-core machine). Returns the number
    of threads to set (None: leave it) and a line to print."""
    if setting != "auto":
        return int(setting), None
    if os.environ.get("OMP_NUM_THREADS") or device_type != "cpu":
        return None, None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    busy = min(cores - 1, max(0, round(busy_cores())))
    if not busy:
        return cores, None
    return cores - busy, (f"train.threads=auto: {busy} of {cores} cores are busy with other work; using "
                          f"{cores - busy} thread(s) (set train.threads or OMP_NUM_THREADS to choose)")


def launcher_precision(setting: str) -> str | None:
    """``accelerate launch --mixed_precision X`` (or its config file) sets
    ``ACCELERATE_MIXED_PRECISION``. With ``train.precision=auto`` a launcher asking for bf16 or
    fp16 is followed; an explicit recipe setting wins, and a launcher asking for another one is
    reported. ``no`` is what every accelerate config holds unless told otherwise, so it leaves
    the choice to the recipe."""
    from ganforge.validate import PRECISIONS

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


def make_accelerator(recipe: Recipe, sample_shape: tuple[int, ...] | None = None) -> Accelerator:
    t = recipe.train
    cpu_dist = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    cpu = t.cpu or cpu_dist or not torch.cuda.is_available()
    precision = launcher_precision(t.precision) or resolve_precision(t.precision, "cpu" if cpu else "cuda",
                                                                   sample_shape)
    world = _world_size()
    if world > 1 and not torch.cuda.is_available() and not cpu_dist:
        raise ConfigError(_TRAP.format(world=world))  # would not be distributed at all
    if world == 1:
        # Accelerate keeps process-wide state; a single process may train several times
        # (notebooks, tests) with different settings.
        from accelerate.state import AcceleratorState, GradientState

        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    accelerator = Accelerator(
        cpu=t.cpu,
        mixed_precision=precision,
        log_with="wandb" if recipe.log.wandb else None,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=recipe.seed),
    )
    if precision == "fp16" and accelerator.device.type == "cpu":
        raise ConfigError(
            "train.precision=fp16 needs a GPU (on the CPU it would silently train in fp32); "
            "use train.precision=bf16 or no"
        )
    if precision == "bf16" and accelerator.device.type == "cpu":
        capability = torch.backends.cpu.get_cpu_capability()
        if not native_cpu_bf16():  # no AVX-512 BF16 / AMX: bf16 is emulated
            accelerator.print(
                f"warning: train.precision=bf16 on a CPU without native bf16 ({capability}) is "
                f"emulated and much slower than fp32 (28x on mnist_seed, benchmarks/RESULTS.md); "
                f"use train.precision=no here")
    world = _world_size()
    if world > 1 and accelerator.num_processes == 1:
        raise ConfigError(_TRAP.format(world=world))
    threads, note = choose_threads(t.threads, accelerator.device.type)
    if threads is not None:
        torch.set_num_threads(threads)
    if note:
        accelerator.print(note)
    return accelerator


class RunLock:
    """An output folder holds one run at a time: a second run on it refuses to start."""

    def __init__(self, folder: Path):
        self.path = folder / ".lock"

    def __enter__(self):
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            owner = self.path.read_text().strip() if self.path.exists() else "?"
            host, _, pid = owner.partition(":")
            if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
                self.path.unlink(missing_ok=True)  # left by a run that died: take it over
                return self.__enter__()
            raise GanforgeError(
                f"output folder {self.path.parent} is in use by another run ({owner}); "
                f"choose another out_dir, or delete {self.path} if that run is gone"
            ) from None
        with os.fdopen(fd, "w") as f:
            f.write(f"{socket.gethostname()}:{os.getpid()}")
        return self

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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


def prepare_networks(acc: Accelerator, nets: dict[str, torch.nn.Module]) -> dict[str, torch.nn.Module]:
    """``accelerator.prepare`` each network (device, DDP), without Accelerate's autocast around
    its forward: with mixed precision, prepare() wraps the model's forward in an autocast that
    an outer ``autocast(enabled=False)`` cannot turn off, so penalties meant to run in fp32
    ran in bf16 (engineering notes). The engine applies autocast itself, around the losses."""
    prepared = dict(zip(nets, acc.prepare(*nets.values()), strict=True)) if len(nets) > 1 \
        else {k: acc.prepare(v) for k, v in nets.items()}
    for module in prepared.values():
        inner = acc.unwrap_model(module)
        if "_original_forward" in inner.__dict__:  # set by prepare() with mixed precision
            del inner.__dict__["_original_forward"]
            inner.__dict__.pop("forward", None)  # back to the class's forward
    return prepared
