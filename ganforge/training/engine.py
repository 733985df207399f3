"""The training engine: one loop, read top to bottom.

    data -> accelerator -> system (the objective plugin: networks, optimizers, phases)
    -> networks from the registry -> accelerator.prepare -> optimizers -> resume
    -> loop: one step (every phase, EMA) -> log / sample / evaluate / checkpoint -> plots

Run it with ``ganforge train RECIPE`` on a CPU or one GPU, and with
``accelerate launch --config_file recipes/accelerate/<cfg>.yaml -m ganforge train RECIPE`` on
several processes. Every part (system, networks, loss, penalties, data, metrics) comes from a
plugin through :mod:`ganforge.contract.manager`; the engine knows none of them by name. One
step is :mod:`ganforge.training.step_function`, run by :mod:`ganforge.training.step`; checkpoints are
:mod:`ganforge.training.resume`; the Accelerator is :mod:`ganforge.training.accelerator`.
"""
from __future__ import annotations

import json
import time
from typing import Any

import torch
from accelerate.utils import broadcast_object_list, set_seed
from torch.optim.swa_utils import AveragedModel
from tqdm.auto import tqdm

from ganforge.contract.data import streams
from ganforge.contract.manager import PluginManager, get_plugin_manager
from ganforge.contract.state import TrainState
from ganforge.errors import ConfigError, DatasetError, GanforgeError
from ganforge.observe import plots
from ganforge.observe.sampling import evaluate, write_samples
from ganforge.observe.trackers import init_trackers, tracker_names
from ganforge.recipe.types import Recipe
from ganforge.training.accelerator import make_accelerator, prepare_networks
from ganforge.training.augment_hooks import install as install_augment
from ganforge.training.batches import make_loader, place_dataset
from ganforge.training.build import build_networks, build_system, sync_bn_split, use_channels_last
from ganforge.training.capture import reasons_against
from ganforge.training.interrupts import CheckpointClock, catch_interrupts
from ganforge.training.launch import RunLock
from ganforge.training.optim import make_optimizers
from ganforge.training.precision import autocast_factory
from ganforge.training.resume import resume_or_refuse, save_checkpoint
from ganforge.training.step import TrainStep

__all__ = ["TrainState", "train"]


def train(recipe: Recipe, plugins: PluginManager | None = None, *, _pause_in_checkpoint: Any = None) -> TrainState:
    """Train the system described by ``recipe``; returns the final state."""
    plugins = plugins or get_plugin_manager()
    registry = plugins.registry
    cfg, t = recipe, recipe.train
    set_seed(cfg.seed)  # the same on every rank: identical initial weights

    # --- data (first: precision=auto depends on what the samples are)
    dataset = registry.build("dataset", cfg.data.name, cfg.data.args, root=cfg.data.root,
                             download=cfg.data.download)
    shape = tuple(dataset.sample_shape)
    accelerator = make_accelerator(cfg, shape)
    if hasattr(dataset, "__len__") and len(dataset) < cfg.data.batch_size * accelerator.num_processes:
        raise DatasetError(f"dataset '{cfg.data.name}' has {len(dataset)} samples, fewer than one "
                           f"batch ({cfg.data.batch_size} x {accelerator.num_processes} processes)")
    place_dataset(dataset, cfg.data.on_device, accelerator)
    loader = make_loader(cfg, dataset, accelerator.device)

    # --- the system and its networks, built from the registry and prepared (device, DDP)
    system = build_system(cfg, registry, shape, dataset)
    nets = build_networks(cfg, registry, system)
    penalties = [(p, registry.build("penalty", p.name, p.args)) for p in cfg.penalties]
    if t.sync_bn:  # must happen before prepare(); NCCL-only in PyTorch
        if accelerator.device.type != "cuda":
            raise ConfigError("train.sync_bn needs CUDA GPUs (SyncBatchNorm has no CPU/gloo "
                              "implementation); drop it on this machine")
        convert, kept = sync_bn_split(cfg, system, nets, penalties)
        nets = {n: torch.nn.SyncBatchNorm.convert_sync_batchnorm(m) if n in convert else m for n, m in nets.items()}
        for name, why in kept.items():
            accelerator.print(f"train.sync_bn: network {name} keeps per-process BatchNorm ({why})")
    if use_channels_last(t.channels_last, nets, accelerator.device):
        nets = {n: m.to(memory_format=torch.channels_last) for n, m in nets.items()}
    nets = prepare_networks(accelerator, nets)
    system.setup(nets)
    augmented = install_augment(cfg, system, {n: accelerator.unwrap_model(m) for n, m in nets.items()}, shape, registry)
    metrics = {m.name: registry.build("metric", m.name, m.args, dataset=dataset) for m in cfg.metrics}
    out = cfg.output_dir
    state = TrainState(cfg, accelerator, system, nets, out, dataset, augment=augmented, penalties=penalties)

    # --- the fast path (the whole step in one CUDA graph) when every part allows it; it needs
    # capturable fused Adam, so this is decided before the optimizers are made
    reasons = reasons_against(state, penalties) if t.cuda_graph is not False else ["train.cuda_graph=false"]
    if reasons and t.cuda_graph is True:
        raise ConfigError("train.cuda_graph=true, but the step cannot be captured: "
                          f"{'; '.join(reasons)}. Use train.cuda_graph=auto to fall back to eager")
    graph = not reasons  # and autocast caches weight casts on the eager step only (train.autocast_cache)
    state.autocast = autocast_factory(accelerator, cache=not graph if t.autocast_cache == "auto" else t.autocast_cache)
    if not graph and accelerator.device.type == "cuda":
        accelerator.print(f"eager training step (no CUDA graph): {'; '.join(reasons)}")

    # --- optimizers (one per declared optimizer), the loader, EMA copies
    fused = graph or cfg.optim.fused is True or (cfg.optim.fused == "auto" and accelerator.device.type == "cuda")
    optimizers = make_optimizers(cfg, system, nets, fused=fused, capturable=graph)
    state.base_lrs = {n: [g["lr"] for g in o.param_groups] for n, o in optimizers.items()}
    # (a stream splits itself across ranks, split_dataset_by_node: Accelerate must not re-shard it)
    *prepared, ready = accelerator.prepare(*optimizers.values(), None if streams(dataset) else loader)
    state.optimizers, state.loader = dict(zip(optimizers, prepared, strict=True)), loader if ready is None else ready
    if t.ema > 0:
        state.emas = {n: AveragedModel(accelerator.unwrap_model(nets[n]), use_buffers=True)  # (ganforge.training.ema updates it)
                      for n, spec in system.networks.items() if spec.ema}
    set_seed(cfg.seed, device_specific=True)  # from here on, each rank draws its own noise

    if accelerator.is_main_process:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise GanforgeError(f"cannot use out_dir={out}: {err.strerror or err}; choose another folder") from None
    accelerator.wait_for_everyone()
    # one run per output folder, taken before looking at its checkpoints; every rank learns
    # whether rank 0 got it, so none is left waiting in a collective when it did not
    lock, refusal = None, [None]
    if accelerator.is_main_process:
        try:
            lock = RunLock(out).__enter__()
        except GanforgeError as err:
            refusal = [str(err)]
    if accelerator.num_processes > 1:
        broadcast_object_list(refusal)
    if refusal[0]:
        raise GanforgeError(refusal[0])
    try:
        resume_or_refuse(state)
        state.stepper = TrainStep(state, penalties, graph=graph, capture=graph and accelerator.device.type == "cuda")
        _run(state, plugins, metrics, _pause_in_checkpoint)
    finally:
        if lock is not None:
            lock.__exit__()
    return state


def _run(state: TrainState, plugins: PluginManager, metrics: dict[str, Any], pause_hook: Any) -> None:
    """The loop: steps, logs, samples, evaluations and checkpoints; then the end of the run."""
    acc, cfg, t, log = state.accelerator, state.config, state.config.train, state.config.log
    stepper, main = state.stepper, acc.is_main_process
    fixed_noise = state.system.grid_noise(log.n_samples, acc.device, torch.Generator(acc.device).manual_seed(cfg.seed))
    metrics_file = state.output_dir / "metrics.jsonl"
    if tracker_names(cfg):  # log.trackers (and log.wandb): Accelerate's trackers, files in the run folder
        init_trackers(acc, cfg)

    if main:
        plugins.train_start(state)
    bar = tqdm(total=t.steps, initial=state.step, disable=not (main and log.progress),
               desc=cfg.name, dynamic_ncols=True)
    window_start, window_steps = time.perf_counter(), 0
    clock = CheckpointClock(log.checkpoint_minutes, acc)
    images_per_step = stepper.fresh * cfg.data.batch_size * acc.num_processes  # real images drawn

    # SIGINT/SIGTERM (on any rank: a cluster's preemption signals every process): finish the
    # step, and every rank stops after the same step, writes one checkpoint and exits
    interrupted: str | None = None
    with catch_interrupts() as signals:
        while state.step < t.steps and not interrupted:
            stepper()  # every phase of the system, EMA (eager, or one CUDA graph replay)
            state.step += 1
            window_steps += 1
            bar.update(1)

            logs: dict[str, Any] = {}
            interrupted = signals.agreed(acc)  # the same answer on every rank
            last = state.step == t.steps or bool(interrupted)
            if state.step % log.every == 0 or last:
                sums, counts = stepper.take()  # the first synchronisation since the last log
                elapsed = time.perf_counter() - window_start
                names = sorted(k for k in sums if counts[k])
                if names:  # means over the steps that computed each value (the same on every rank)
                    values = acc.reduce(torch.stack([sums[k] for k in names]), reduction="mean")
                    values = values / torch.tensor([counts[k] for k in names], device=values.device)
                    logs = {k: float(v) for k, v in zip(names, values.tolist(), strict=True)}
                logs.update(step=state.step, epoch=state.epoch, skipped=state.skipped,
                            images_per_s=window_steps * images_per_step / max(elapsed, 1e-9))
                state.history.append(logs)
                if main:
                    with open(metrics_file, "a") as f:
                        f.write(json.dumps(logs) + "\n")
                    bar.set_postfix({k.removeprefix("loss_"): f"{v:.3f}" for k, v in logs.items() if k.startswith("loss_")})
                acc.log({f"train/{k}": v for k, v in logs.items() if k != "step"}, step=state.step)
                window_start, window_steps = time.perf_counter(), 0
            if main:
                plugins.step_end(state, logs)

            if log.sample_every and state.step % log.sample_every == 0 and not last:
                write_samples(state, fixed_noise, f"samples-{state.step:08d}")
            if log.eval_every and metrics and state.step % log.eval_every == 0 and not last:
                evaluate(state, metrics)
            by_steps = bool(log.checkpoint_every) and state.step % log.checkpoint_every == 0
            if (by_steps or clock.due(state.step % log.every == 0)) and not last:
                stepper.sync()
                save_checkpoint(state, plugins, pause_hook)
                clock.reset()
            if acc.num_processes == 1 and not interrupted:  # a signal during the hooks: stop now
                interrupted = signals.agreed(acc)  # (one process: no collective; several: next step)
    bar.close()
    stepper.sync()
    state.interrupted = interrupted

    # --- the end: checkpoint, samples, metrics, plots
    path = save_checkpoint(state, plugins, pause_hook)
    # an interrupted run leaves nothing that looks finished: its last grid is named by its step
    sample_path, what = write_samples(state, fixed_noise, f"samples-{state.step:08d}" if interrupted else "samples-final")
    if metrics:
        evaluate(state, metrics)
    if main and state.history:
        plots.save_loss_curve(state.history, state.output_dir / "losses.png")
    if main:
        acc.print(f"{what}: {sample_path}")
        acc.print(f"loss curve: {state.output_dir / 'losses.png'}; metrics: {metrics_file}")
        if path is not None:
            acc.print(f"checkpoint: {path}")
        if interrupted:
            acc.print(f"interrupted by {interrupted} at step {state.step}; to resume, run the same recipe with "
                      f"resume=auto out_dir={state.output_dir}")  # (`ganforge train` prints the command)
        plugins.train_end(state)
    acc.end_training()
