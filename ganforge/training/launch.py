"""Launching: the checks that a run started as its launcher asked (a stray ``WORLD_SIZE``, an
``accelerate launch`` config that started one process instead of N), and the lock that keeps
one run per output folder."""
from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

from ganforge.errors import ConfigError, GanforgeError

__all__ = ["RunLock", "check_launch", "command_processes", "launcher_request", "single_process_trap", "world_size"]


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


#: what a launcher that starts several processes sets in each: torchrun (and accelerate launch,
#: which runs it) sets TORCHELASTIC_RUN_ID; a SLURM job step sets SLURM_PROCID; an MPI launcher
#: OMPI_COMM_WORLD_RANK or PMI_RANK
LAUNCHER_MARKS = ("TORCHELASTIC_RUN_ID", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK")


def world_size() -> int:
    """``WORLD_SIZE`` as a number of processes, checked before anything waits for other
    processes: set (> 1) in a process no multi-process launcher started, it is a leftover of
    another shell, and joining a process group would fail with a traceback or, with
    ``MASTER_ADDR`` and ``RANK`` also set, wait for processes that never come."""
    raw = os.environ.get("WORLD_SIZE", "1") or "1"
    if not raw.strip().isdigit() or int(raw) < 1:
        raise ConfigError(f"the environment variable WORLD_SIZE={raw!r} is not a number of processes; "
                          f"unset it, or launch with accelerate launch / torchrun, which set it")
    world = int(raw)
    if world > 1 and not any(os.environ.get(k) for k in LAUNCHER_MARKS):
        raise ConfigError(f"WORLD_SIZE={world} is set, but no launcher started this process (torchrun and "
                          f"accelerate launch set TORCHELASTIC_RUN_ID, SLURM sets SLURM_PROCID): unset WORLD_SIZE "
                          f"(and RANK, MASTER_ADDR) to train in one process, or start {world} processes with "
                          f"torchrun --nproc_per_node {world} or accelerate launch")
    return world


def command_processes():
    """Accelerate's process state when a command other than training (``ganforge eval``) was
    started as several processes (on a machine without GPUs, or with ACCELERATE_USE_CPU=1, over
    gloo on the CPU); else None. The launch is checked as training's is."""
    import torch

    if world_size() <= 1:
        check_launch(1)  # accelerate launch asked for more and started one: refused
        return None
    from accelerate import PartialState

    cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes") or not torch.cuda.is_available()
    state = PartialState(cpu=cpu)
    check_launch(state.num_processes)
    return state


def leave_process_group(state) -> None:
    """End a command's process group once its last collective is done: every process waits
    for the others, then destroys the group. A process that exits with the group still up
    (gloo's threads running) can abort with "terminate called without an active exception"
    while the others finish, and the launcher then reports the whole command failed."""
    state.wait_for_everyone()
    state.destroy_process_group()


def single_process_trap(world: int) -> ConfigError:
    """The error for WORLD_SIZE > 1 in a process that Accelerate sees alone."""
    return ConfigError(_TRAP.format(world=world))


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
