"""The device policy: how many CPU threads a run uses, and how a CUDA GPU is set up."""
from __future__ import annotations

import os
import time

import torch

from ganforge.errors import ConfigError

__all__ = ["busy_cores", "choose_threads", "cpu_times", "cuda_policy"]


def cpu_times() -> tuple[int, int] | None:
    """(busy, total) clock ticks of every core since boot, from /proc/stat (Linux; None
    elsewhere); idle and iowait count as not busy."""
    try:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)
    except (OSError, ValueError, IndexError):
        return None
    return sum(values) - idle, sum(values)


def busy_cores(seconds: float = 0.3) -> float:
    """How many cores other work keeps busy now: /proc/stat sampled over ``seconds`` (Linux;
    elsewhere the 1-minute load average)."""
    before = cpu_times()
    time.sleep(seconds)
    after = cpu_times()
    if before is None or after is None:
        return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    cores = os.cpu_count() or 1
    return cores * (after[0] - before[0]) / max(1, after[1] - before[1])


def choose_threads(setting: int | str, device_type: str) -> tuple[int | None, str | None]:
    """``train.threads``: a number, or ``auto``. Auto leaves torch's setting alone when
    ``OMP_NUM_THREADS`` is set (by the user or a launcher: torchrun sets 1) and on GPUs; on a
    CPU it uses the cores that other work leaves idle, at least one (torch's default, one per
    core, collapses next to a busy process: 7x slower on a 2-core machine). Returns the number
    of threads to set (None: leave it) and a line to print."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if setting != "auto":
        threads = int(setting)
        if threads > 4 * cores:  # far beyond any use; torch crashes outright at ~100000
            raise ConfigError(f"train.threads={threads} is far more than this machine's {cores} cores; use at "
                              f"most {cores} (or auto)")
        if threads > cores:
            return threads, (f"warning: train.threads={threads} is more than this machine's {cores} cores: the "
                             f"threads compete for them and training slows; use at most {cores} (or auto)")
        return threads, None
    if os.environ.get("OMP_NUM_THREADS") or device_type != "cpu":
        return None, None
    busy = min(cores - 1, max(0, round(busy_cores())))
    if not busy:
        return cores, None
    return cores - busy, (f"train.threads=auto: {busy} of {cores} cores are busy with other work; using "
                          f"{cores - busy} thread(s) (set train.threads or OMP_NUM_THREADS to choose)")


def cuda_policy(tf32: bool) -> None:
    """How ganforge sets up a CUDA GPU. ``cudnn.benchmark`` on: every step has the same shapes
    (drop_last, fixed batch), so cuDNN's autotuning in the first steps pays for itself; with
    the CUDA-graph fast path the algorithms chosen during warm-up are the ones captured. TF32
    (``train.tf32``, default on) for fp32 matmuls and convolutions: the tensor-core rate for
    fp32 training with a 10-bit mantissa, as PyTorch's own default for convolutions; false
    gives full fp32 (torch's ``highest`` matmul precision, cuDNN TF32 off). bf16 autocast
    regions are unaffected."""
    torch.backends.cudnn.benchmark = True
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    torch.backends.cudnn.allow_tf32 = bool(tf32)
