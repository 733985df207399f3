"""The Accelerator a run uses (device, processes, precision, trackers, threads), and its
networks prepared without Accelerate's own autocast. The policies it applies live in
:mod:`ganforge.training.launch`, :mod:`ganforge.training.precision` and :mod:`ganforge.training.device`."""
from __future__ import annotations

import os

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration

from ganforge.errors import ConfigError
from ganforge.observe.trackers import check_trackers, tracker_names
from ganforge.recipe.types import Recipe
from ganforge.training.device import choose_threads, cuda_policy
from ganforge.training.launch import check_launch, single_process_trap, world_size
from ganforge.training import precision as precisions  # (module: tests patch native_cpu_bf16 there)

__all__ = ["make_accelerator", "prepare_networks"]


def make_accelerator(recipe: Recipe, sample_shape: tuple[int, ...] | None = None) -> Accelerator:
    t = recipe.train
    cpu_dist = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    cpu = t.cpu or cpu_dist or not torch.cuda.is_available()
    precision = (precisions.launcher_precision(t.precision)
                 or precisions.resolve_precision(t.precision, "cpu" if cpu else "cuda", sample_shape))
    world = world_size()
    if world == 1:
        # Accelerate keeps process-wide state; a single process may train several times
        # (notebooks, tests) with different settings.
        from accelerate.state import AcceleratorState, GradientState

        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    # cpu: several processes on a machine without GPUs train on the CPU over gloo (MULTI_CPU),
    # however they were launched (`--multi_gpu`, a MULTI_GPU config, torchrun), instead of as
    # independent single-process runs
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
        if not precisions.native_cpu_bf16():  # no AVX-512 BF16 / AMX: bf16 is emulated
            accelerator.print(
                f"warning: train.precision=bf16 on a CPU without native bf16 ({capability}) is "
                f"emulated and much slower than fp32 (28x on mnist_seed, benchmarks/RESULTS.md); "
                f"use train.precision=no here")
    if accelerator.device.type == "cuda":
        cuda_policy(t.tf32)
    world = world_size()
    if world > 1 and accelerator.num_processes == 1:
        raise single_process_trap(world)
    check_launch(accelerator.num_processes)
    threads, note = choose_threads(t.threads, accelerator.device.type)
    if threads is not None:
        torch.set_num_threads(threads)
    if note:
        accelerator.print(note)
    return accelerator


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
