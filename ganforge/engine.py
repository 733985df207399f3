"""The training engine: one loop, read top to bottom.

    data -> accelerator -> system (the objective plugin: networks, optimizers, phases)
    -> networks from the registry -> accelerator.prepare -> optimizers -> resume
    -> loop: one step (every phase, EMA) -> log / sample / evaluate / checkpoint -> plots

Run it with ``ganforge train RECIPE`` on a CPU or one GPU, and with
``accelerate launch --config_file recipes/accelerate/<cfg>.yaml -m ganforge train RECIPE`` on
several processes. Every part (system, networks, loss, penalties, data, metrics) comes from a
plugin through :mod:`ganforge.manager`; the engine knows none of them by name. What one step
does is in :mod:`ganforge.step_function`, run by :mod:`ganforge.step`; checkpoints in :mod:`ganforge.resume`; precision and the
Accelerator in :mod:`ganforge.accel`.
"""
from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from typing import Any

import torch
from accelerate.utils import broadcast_object_list, set_seed
from torch.optim.swa_utils import AveragedModel

from ganforge import plots
from ganforge.accel import RunLock, autocast_factory, make_accelerator, prepare_networks
from ganforge.augment import install as install_augment
from ganforge.build import build_networks, build_system, sync_bn_split, use_channels_last
from ganforge.config import Recipe
from ganforge.data import make_loader, place_dataset, streams
from ganforge.errors import ConfigError, DatasetError, GanforgeError
from ganforge.manager import PluginManager, get_plugin_manager
from ganforge.resume import resume_or_refuse, save_checkpoint
from ganforge.optim import make_optimizers
from ganforge.sampling import evaluate, write_samples
from ganforge.trackers import init_trackers, tracker_names
from ganforge.state import TrainState
from ganforge.capture import reasons_against
from ganforge.step import TrainStep

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
    graph = not reasons
    state.autocast = autocast_factory(accelerator, cache=False)  # one policy on both paths (see autocast_factory)
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
        state.emas = {n: AveragedModel(accelerator.unwrap_model(nets[n]), use_buffers=True)  # (ganforge.ema updates it)
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
    from tqdm.auto import tqdm

    bar = tqdm(total=t.steps, initial=state.step, disable=not (main and log.progress),
               desc=cfg.name, dynamic_ncols=True)
    window_start, window_steps = time.perf_counter(), 0
    clock = _CheckpointClock(log.checkpoint_minutes, acc)
    images_per_step = stepper.fresh * cfg.data.batch_size * acc.num_processes  # real images drawn

    # SIGINT/SIGTERM (on any rank: a cluster's preemption signals every process): finish the
    # step, and every rank stops after the same step, writes one checkpoint and exits
    interrupted: str | None = None
    with _catch_interrupts() as signals:
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


class _Signals:
    """The SIGINT/SIGTERM this process received, and the decision all processes share."""

    def __init__(self):
        self.received: list[int] = []
        self.group, self.pending = None, None

    def agreed(self, acc: Any) -> str | None:
        """The signal that stops the run after this step, or None. With several processes
        every rank must stop after the same step (a rank that stopped alone would hang the
        others' collectives), so the ranks share their flags with an all-reduce over a gloo
        group of host tensors: started asynchronously after one step and collected after the
        next, it costs no device synchronisation and a stop comes one step after the signal."""
        number = self.received[0] if self.received else 0
        if acc.num_processes == 1:
            return signal.Signals(number).name if number else None
        import torch.distributed as dist

        if self.group is None:  # collective: every rank creates it at its first step
            self.group = dist.new_group(backend="gloo")
        decided = 0
        if self.pending is not None:
            work, flag = self.pending
            work.wait()
            decided = int(flag[0])
        flag = torch.tensor([number], dtype=torch.int64)
        self.pending = (dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group, async_op=True), flag)
        return signal.Signals(decided).name if decided else None

    def close(self) -> None:
        """Collect an all-reduce still in flight (every rank started it), before the process
        group goes away."""
        if self.pending is not None:
            self.pending[0].wait()
            self.pending = None


@contextlib.contextmanager
def _catch_interrupts():
    """Collect SIGINT/SIGTERM instead of dying mid-step (the loop then checkpoints and ends), on
    every rank; the previous handlers come back however the loop ends, also on an error."""
    signals = _Signals()

    def on_signal(signum, _frame):
        signals.received.append(signum)

    in_main_thread = threading.current_thread() is threading.main_thread()
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)} if in_main_thread else {}
    try:
        yield signals
        signals.close()
    finally:
        for s, h in old.items():
            signal.signal(s, h)


class _CheckpointClock:
    """``log.checkpoint_minutes``: a checkpoint when that much wall time has passed since the
    last one, so a crash or a kill never loses more. Looked at on log steps only; every rank
    takes rank 0's decision (saving is collective)."""

    def __init__(self, minutes: float, acc: Any):
        self.seconds, self.acc = minutes * 60, acc
        self.reset()

    def reset(self) -> None:
        self.start = time.monotonic()

    def due(self, log_step: bool) -> bool:
        if not self.seconds or not log_step:
            return False
        flag = torch.tensor(float(time.monotonic() - self.start >= self.seconds), device=self.acc.device)
        if self.acc.num_processes > 1:
            from accelerate.utils import broadcast

            flag = broadcast(flag, from_process=0)
        return bool(flag > 0)
