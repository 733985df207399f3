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

__all__ = ["AUTOCAST_DTYPES", "RunLock", "autocast_factory", "check_launch", "cuda_policy", "launcher_request", "make_accelerator", "native_cpu_bf16",
           "prepare_networks", "resolve_precision"]


_TRAP = (
    "WORLD_SIZE={world} but Accelerate sees a single process, so each process would train "
    "alone and all would write the same output folder. Launch several processes with "
    "accelerate launch --config_file recipes/accelerate/cpu_2proc.yaml (CPUs) or a MULTI_GPU "
    "config (GPUs), or torchrun"
)


def launcher_request() -> tuple[int, str] | None:
    """How many processes ``accelerate launch`` was asked to start, and from where (its
    ``--num_processes`` or its config file's ``num_processes``): read from the launcher's own
    command line, which is this process's parent. ``None`` when this process was not started by
    ``accelerate launch`` (which sets ``ACCELERATE_DYNAMO_BACKEND`` in every launcher) or the
    request cannot be read. Accelerate 1.x exports no process count to the processes it starts,
    and its single-process launcher sets no ``WORLD_SIZE``, so the parent is the only witness
    of a request for N processes that started one."""
    if "ACCELERATE_DYNAMO_BACKEND" not in os.environ:
        return None
    try:
        raw = Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
    except OSError:
        return None
    argv = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
    start = next((i + 1 for i, a in enumerate(argv) if a.endswith("accelerate.commands.launch")
                  or (a == "launch" and i and Path(argv[i - 1]).name.startswith("accelerate"))), None)
    if start is None:
        return None
    import io

    from accelerate.commands.config.config_args import default_config_file, load_config_from_file
    from accelerate.commands.launch import launch_command_parser

    try:
        with contextlib.redirect_stderr(io.StringIO()):
            args, _ = launch_command_parser().parse_known_args(argv[start:])
    except (SystemExit, Exception):  # not a command line we understand: no claim
        return None
    if args.num_processes is not None:
        return int(args.num_processes), f"--num_processes {args.num_processes}"
    path = args.config_file or (default_config_file if os.path.isfile(default_config_file) else None)
    if path is None:
        return None
    try:
        config = load_config_from_file(path)
    except Exception:  # noqa: BLE001 - accelerate reports a bad config itself
        return None
    processes = getattr(config, "num_processes", None)
    if not isinstance(processes, int) or processes < 1:
        return None
    return processes, f"num_processes: {processes} in {path}"


def check_launch(seen: int) -> None:
    """Refuse a run whose launcher asked for another number of processes than started (a
    MULTI_CPU accelerate config starts ONE process through accelerate's simple launcher)."""
    request = launcher_request()
    if request is None or request[0] == seen:
        return
    asked, source = request
    import accelerate

    raise ConfigError(
        f"accelerate launch was asked for {asked} processes ({source}) but {seen} started: accelerate "
        f"{accelerate.__version__} starts several processes on one machine only for a MULTI_GPU config "
        f"(or --multi_gpu); a MULTI_CPU config runs one process. Use distributed_type: MULTI_GPU as "
        f"recipes/accelerate/cpu_2proc.yaml does (without GPUs ganforge trains the processes on the "
        f"CPU over gloo), or launch with torchrun --nproc_per_node {asked}")


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
    if world == 1:
        # Accelerate keeps process-wide state; a single process may train several times
        # (notebooks, tests) with different settings.
        from accelerate.state import AcceleratorState, GradientState

        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    # cpu: several processes on a machine without GPUs train on the CPU over gloo (MULTI_CPU),
    # however they were launched (`--multi_gpu`, a MULTI_GPU config, torchrun), instead of as
    # independent single-process runs
    from accelerate.utils import ProjectConfiguration

    from ganforge.trackers import check_trackers, tracker_names

    trackers = tracker_names(recipe)
    check_trackers(trackers)  # (a missing package: one line, before anything is written)
    out = recipe.output_dir.resolve()
    accelerator = Accelerator(
        cpu=cpu,
        mixed_precision=precision,
        log_with=trackers or None,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "tb")),
        # non_blocking: batches from pinned memory (make_loader pins on CUDA) are copied to
        # the GPU asynchronously instead of blocking the host
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=recipe.seed,
                                                  non_blocking=True),
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
    if accelerator.device.type == "cuda":
        cuda_policy(t.tf32)
    world = _world_size()
    if world > 1 and accelerator.num_processes == 1:
        raise ConfigError(_TRAP.format(world=world))
    check_launch(accelerator.num_processes)
    threads, note = choose_threads(t.threads, accelerator.device.type)
    if threads is not None:
        torch.set_num_threads(threads)
    if note:
        accelerator.print(note)
    return accelerator


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
        except OSError as err:  # a read-only file system, no permission
            raise GanforgeError(f"cannot write to out_dir {self.path.parent}: {err.strerror or err}; "
                                f"choose a folder this user can write to") from None
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
