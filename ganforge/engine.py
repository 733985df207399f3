"""The training engine: one loop, read top to bottom.

    build (registry) -> accelerator.prepare -> loop: n_critic D steps, one G step (D frozen),
    EMA -> log / sample / evaluate / checkpoint -> plots

Run it with ``ganforge train RECIPE`` on a CPU or one GPU, and with
``accelerate launch --config_file recipes/accelerate/<cfg>.yaml -m ganforge train RECIPE`` on
several processes. Every part (models, loss, penalties, objective, data, metrics) comes from a
plugin through :mod:`ganforge.manager`; the engine knows none of them by name.
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import AutocastKwargs, DataLoaderConfiguration, broadcast_object_list, set_seed
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from ganforge import checkpoint as ckpt
from ganforge import fastpath, plots
from ganforge.config import Recipe, recipe_from_dict
from ganforge.data import batch_collate
from ganforge.errors import CheckpointError, ConfigError, DatasetError, GanforgeError
from ganforge.manager import PluginManager, Registry, get_plugin_manager


@dataclass
class TrainState:
    """Everything a running job holds; handed to the lifecycle hooks."""

    config: Recipe
    accelerator: Accelerator
    generator: torch.nn.Module
    discriminator: torch.nn.Module
    ema: AveragedModel | None
    opt_g: torch.optim.Optimizer | None
    opt_d: torch.optim.Optimizer | None
    output_dir: Path
    dataset: Any = None
    objective: Any = None
    loader: Any = None
    step: int = 0  # completed generator steps
    d_steps: int = 0  # completed discriminator steps (lazy penalties count these)
    epoch: int = 0  # data position: epoch and batches consumed in it
    batch_in_epoch: int = 0
    skipped: int = 0  # steps skipped for non-finite losses
    history: list[dict[str, Any]] = field(default_factory=list)
    last_checkpoint: Path | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    stepper: Any = None  # EagerStep, or fastpath.GraphStep (the step in CUDA graphs)
    autocast: Any = contextlib.nullcontext  # () -> the mixed-precision context of the losses

    @property
    def sampler_generator(self) -> torch.nn.Module:
        """The generator used for samples and evaluation: the EMA copy when there is one."""
        return self.ema.module if self.ema is not None else self.accelerator.unwrap_model(self.generator)


# ------------------------------------------------------------------------------ building
def build_models(recipe: Recipe, registry: Registry, sample_shape: tuple[int, ...]):
    """Generator and discriminator from the registry, checked on a tiny batch."""
    G = registry.build("generator", recipe.generator.name, recipe.generator.args,
                       z_dim=recipe.train.z_dim, out_shape=sample_shape)
    D = registry.build("discriminator", recipe.discriminator.name, recipe.discriminator.args,
                       in_shape=sample_shape)
    G.eval(), D.eval()
    with torch.no_grad():  # fail now, with the shapes, rather than in the middle of a step
        fake = G(torch.zeros(2, recipe.train.z_dim))
        if tuple(fake.shape[1:]) != tuple(sample_shape):
            raise ConfigError(
                f"generator '{recipe.generator.name}' makes samples of shape "
                f"{tuple(fake.shape[1:])} but the dataset's are {tuple(sample_shape)}"
            )
        out = D(fake)
        if out.numel() != 2:
            raise ConfigError(
                f"discriminator '{recipe.discriminator.name}' returned shape {tuple(out.shape)} "
                f"for 2 samples; it must return one logit per sample"
            )
    G.train(), D.train()
    return G, D


_TRAP = (
    "WORLD_SIZE={world} but Accelerate sees a single process, so each process would train "
    "alone and all would write the same output folder (this is what `accelerate launch "
    "--multi_gpu` does on a machine without GPUs). On CPUs launch with ACCELERATE_USE_CPU=1 "
    "accelerate launch --config_file recipes/accelerate/cpu_2proc.yaml -m ganforge train RECIPE"
)


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


def make_accelerator(recipe: Recipe, sample_shape: tuple[int, ...] | None = None) -> Accelerator:
    t = recipe.train
    cpu_dist = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    cpu = t.cpu or cpu_dist or not torch.cuda.is_available()
    precision = resolve_precision(t.precision, "cpu" if cpu else "cuda", sample_shape)
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
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
        # autocast's weight-cast cache cannot live across CUDA graph capture (this handler is
        # read once, where prepare() wraps the models' forward)
        kwargs_handlers=[AutocastKwargs(cache_enabled=False)]
        if t.cuda_graph is not False and not cpu and precision != "no" else [],
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
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world > 1 and accelerator.num_processes == 1:
        raise ConfigError(_TRAP.format(world=world))
    return accelerator


class _RunLock:
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


# ----------------------------------------------------------------------------- checkpoint
def save_checkpoint(state: TrainState, plugins: PluginManager, pause_hook: Any = None) -> Path | None:
    """Write a checkpoint of ``state`` (all ranks' RNG; files by the main process only)."""
    acc, cfg = state.accelerator, state.config
    G, D = acc.unwrap_model(state.generator), acc.unwrap_model(state.discriminator)
    for name, module in (("generator", G), ("discriminator", D)):
        bad = [k for k, v in module.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            acc.print(f"not writing a checkpoint at step {state.step}: {name} has non-finite "
                      f"values in {', '.join(bad[:5])}")
            return None
    rng_tensors, rng_meta = ckpt.rng_state()
    all_rng = [None] * acc.num_processes
    if acc.num_processes > 1:
        torch.distributed.all_gather_object(all_rng, (rng_tensors, rng_meta))
    else:
        all_rng = [(rng_tensors, rng_meta)]
    final = state.output_dir / "checkpoints" / f"{ckpt.PREFIX}{state.step:08d}"
    if acc.is_main_process:
        opt_g_t, opt_g_meta = ckpt.split_optimizer_state(state.opt_g.state_dict())
        opt_d_t, opt_d_meta = ckpt.split_optimizer_state(state.opt_d.state_dict())
        tensors = {"generator": ckpt.model_state(G), "discriminator": ckpt.model_state(D),
                   "optimizer_g": opt_g_t, "optimizer_d": opt_d_t}
        if state.ema is not None:
            tensors["generator_ema"] = ckpt.model_state(state.ema.module)
        for rank, (t, _) in enumerate(all_rng):
            tensors[f"rng-rank{rank}"] = t
        scaler = getattr(acc, "scaler", None)
        meta = {
            "step": state.step, "d_steps": state.d_steps, "epoch": state.epoch,
            "batch_in_epoch": state.batch_in_epoch, "skipped": state.skipped,
            "world_size": acc.num_processes, "sample_shape": list(state.dataset.sample_shape),
            "ema_n_averaged": int(state.ema.n_averaged) if state.ema is not None else None,
            "optimizer_g": opt_g_meta, "optimizer_d": opt_d_meta,
            "rng": [m for _, m in all_rng],
            "scaler": scaler.state_dict() if scaler is not None else None,
            "recipe": cfg.to_dict(),
            "plugins": {n: [i.distribution, i.version, i.module] for n, i in plugins.info.items()},
        }
        ckpt.write_checkpoint(final, tensors, meta, pause_hook)
        ckpt.rotate(final.parent, cfg.log.keep)
    acc.wait_for_everyone()
    state.last_checkpoint = final
    if acc.is_main_process:
        plugins.checkpoint_saved(state, str(final))
    return final


def load_checkpoint(state: TrainState, folder: Path) -> None:
    """Restore weights, optimizers, EMA, RNG and data position from ``folder``."""
    acc, cfg = state.accelerator, state.config
    meta = ckpt.read_meta(folder)
    saved = recipe_from_dict(meta["recipe"])
    G, D = acc.unwrap_model(state.generator), acc.unwrap_model(state.discriminator)
    for name, module in (("generator", G), ("discriminator", D)):
        weights = ckpt.load_tensors(folder / f"{name}.safetensors")
        own = module.state_dict()
        mismatched = sorted(
            set(own) ^ set(weights)
            | {k for k in set(own) & set(weights) if own[k].shape != weights[k].shape}
        )
        if mismatched:
            raise CheckpointError(
                f"checkpoint {folder} does not fit this recipe's {name}: mismatched tensors "
                f"{', '.join(mismatched[:10])}{' ...' if len(mismatched) > 10 else ''}"
            )
        module.load_state_dict(weights)
    differences = _diff(saved.to_dict(), cfg.to_dict())
    differences = [d for d in differences if not d.startswith(("resume", "train.steps", "out_dir"))]
    if differences:
        acc.print(f"warning: resuming with a recipe that differs from the checkpoint's: {'; '.join(differences)}")
    for key, opt in (("optimizer_g", state.opt_g), ("optimizer_d", state.opt_d)):
        opt.load_state_dict(ckpt.join_optimizer_state(ckpt.load_tensors(folder / f"{key}.safetensors"), meta[key]))
    if state.ema is not None and "generator_ema.safetensors" in meta["files"]:
        state.ema.module.load_state_dict(ckpt.load_tensors(folder / "generator_ema.safetensors"))
        state.ema.n_averaged.fill_(meta["ema_n_averaged"] or 0)
    scaler = getattr(acc, "scaler", None)
    if scaler is not None and meta.get("scaler"):
        scaler.load_state_dict(meta["scaler"])
    rank = acc.process_index
    if meta["world_size"] == acc.num_processes:
        ckpt.set_rng_state(ckpt.load_tensors(folder / f"rng-rank{rank}.safetensors"), meta["rng"][rank])
    else:
        acc.print(f"note: checkpoint written by {meta['world_size']} process(es), resumed on "
                  f"{acc.num_processes}: RNG streams restart from the seed")
        set_seed(cfg.seed + meta["step"], device_specific=True)
    state.step, state.d_steps = meta["step"], meta["d_steps"]
    state.epoch, state.batch_in_epoch, state.skipped = meta["epoch"], meta["batch_in_epoch"], meta["skipped"]


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [f"{prefix[:-1]}: {a!r} -> {b!r}"]


# ------------------------------------------------------------------------------- training
def train(recipe: Recipe, plugins: PluginManager | None = None, *, _pause_in_checkpoint: Any = None) -> TrainState:
    """Train the GAN described by ``recipe``; returns the final state."""
    plugins = plugins or get_plugin_manager()
    registry = plugins.registry
    cfg, t = recipe, recipe.train
    set_seed(cfg.seed)  # the same on every rank: identical initial weights

    # data (first: precision=auto depends on what the samples are)
    dataset = registry.build("dataset", cfg.data.name, cfg.data.args, root=cfg.data.root,
                             download=cfg.data.download)
    shape = tuple(dataset.sample_shape)
    accelerator = make_accelerator(cfg, shape)
    if len(dataset) < cfg.data.batch_size * accelerator.num_processes:
        raise DatasetError(f"dataset '{cfg.data.name}' has {len(dataset)} samples, fewer than one "
                           f"batch ({cfg.data.batch_size} x {accelerator.num_processes} processes)")
    _place_dataset(dataset, cfg.data.on_device, accelerator)
    loader = make_loader(cfg, dataset, accelerator.device)

    # models, loss, penalties, objective
    G, D = build_models(cfg, registry, shape)
    if t.sync_bn:  # must happen before prepare(); NCCL-only in PyTorch
        if accelerator.device.type != "cuda":
            raise ConfigError("train.sync_bn needs CUDA GPUs (SyncBatchNorm has no CPU/gloo "
                              "implementation); drop it on this machine")
        D = torch.nn.SyncBatchNorm.convert_sync_batchnorm(D)
    has_conv = any(isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d) for m in [*G.modules(), *D.modules()])
    if t.channels_last is True or (t.channels_last == "auto" and has_conv and accelerator.device.type == "cuda"):
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    G, D = accelerator.prepare(G, D)
    loss = registry.build("loss", cfg.loss.name, cfg.loss.args)
    penalties = [(p, registry.build("penalty", p.name, p.args)) for p in cfg.penalties]
    objective = registry.build("objective", cfg.objective.name, cfg.objective.args,
                               generator=G, discriminator=D, loss=loss, z_dim=t.z_dim)
    metrics = {m.name: registry.build("metric", m.name, m.args, dataset=dataset) for m in cfg.metrics}
    out = cfg.output_dir
    state = TrainState(cfg, accelerator, G, D, None, None, None, out, dataset, objective)

    # the fast path (one CUDA graph per step) when everything allows it; it needs capturable
    # fused Adam, so this is decided before the optimizers are made
    reasons = fastpath.reasons_against(state, penalties) if t.cuda_graph is not False else ["train.cuda_graph=false"]
    if reasons and t.cuda_graph is True:
        raise ConfigError("train.cuda_graph=true, but the step cannot be captured: "
                          f"{'; '.join(reasons)}. Use train.cuda_graph=auto to fall back to eager")
    graph = not reasons
    state.autocast = autocast_factory(accelerator, cache=not graph)
    if not graph and accelerator.device.type == "cuda":
        accelerator.print(f"eager training step (no CUDA graph): {'; '.join(reasons)}")
    fused = graph or cfg.optim.fused is True or (cfg.optim.fused == "auto" and accelerator.device.type == "cuda")
    opt_g, opt_d = (
        torch.optim.Adam(module.parameters(), lr=lr, betas=tuple(cfg.optim.betas),
                         weight_decay=cfg.optim.weight_decay, fused=fused or None, capturable=graph)
        for module, lr in ((G, cfg.optim.lr_g), (D, cfg.optim.lr_d))
    )
    opt_g, opt_d, loader = accelerator.prepare(opt_g, opt_d, loader)
    if t.ema > 0:
        state.ema = AveragedModel(accelerator.unwrap_model(G), multi_avg_fn=get_ema_multi_avg_fn(t.ema),
                                  use_buffers=True)
    state.opt_g, state.opt_d, state.loader = opt_g, opt_d, loader
    set_seed(cfg.seed, device_specific=True)  # from here on, each rank draws its own noise

    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    # one run per output folder, taken before looking at its checkpoints; every rank learns
    # whether rank 0 got it, so none is left waiting in a collective when it did not
    lock, refusal = None, [None]
    if accelerator.is_main_process:
        try:
            lock = _RunLock(out).__enter__()
        except GanforgeError as err:
            refusal = [str(err)]
    if accelerator.num_processes > 1:
        broadcast_object_list(refusal)
    if refusal[0]:
        raise GanforgeError(refusal[0])
    try:
        _resume_or_refuse(state)
        state.stepper = (fastpath.GraphStep(state, penalties, capture=accelerator.device.type == "cuda")
                         if graph else EagerStep(state, penalties))
        _run(state, plugins, state.stepper, metrics, _pause_in_checkpoint)
    finally:
        if lock is not None:
            lock.__exit__()
    return state


def make_loader(cfg: Recipe, dataset: Any, device: torch.device) -> DataLoader:
    """The training DataLoader: whole batches by one indexing operation for in-memory datasets;
    worker processes, pinned memory (on CUDA) and persistent workers for datasets read from
    files; shuffled, with the last incomplete batch dropped."""
    batched = hasattr(dataset, "__getitems__")
    workers = 0 if batched else _workers(cfg.data.num_workers)
    return DataLoader(
        dataset, batch_size=cfg.data.batch_size, shuffle=True,
        drop_last=True,  # constant batch shapes: no odd last batch (the seed script's third bug)
        collate_fn=batch_collate if batched else None,
        num_workers=workers, persistent_workers=workers > 0,
        pin_memory=device.type == "cuda" and not batched,
        # its own generator: starting an epoch must not draw from the global RNG that the
        # noise comes from, or a resumed run would diverge from an uninterrupted one
        generator=torch.Generator().manual_seed(cfg.seed),
    )


def _workers(setting: int | str) -> int:
    """data.num_workers: a number, or auto = one per core beyond the training process's, up to 8."""
    if setting == "auto":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(1, min(8, cores - 1))
    return int(setting)


def _place_dataset(dataset: Any, setting: bool | str, acc: Accelerator) -> None:
    """Keep an in-memory dataset on the GPU (as stored: uint8 images are 4x smaller than
    float), so batches are gathered there instead of copied from the host every step."""
    data = getattr(dataset, "data", None)
    if setting is False or not isinstance(data, torch.Tensor) or acc.device.type == "cpu":
        if setting is True and not isinstance(data, torch.Tensor):
            raise ConfigError("data.on_device=true needs an in-memory dataset (mnist, cifar10, toy_*); "
                              "this one is read from files by DataLoader workers")
        return
    size = data.numel() * data.element_size()
    if setting == "auto" and acc.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(acc.device)
        if size > free // 4:
            acc.print(f"data stays in host memory: {size / 2**30:.1f} GiB is over a quarter of the "
                      f"GPU's free memory (data.on_device=true forces it)")
            return
    dataset.data = data.to(acc.device)
    if getattr(dataset, "labels", None) is not None:
        dataset.labels = dataset.labels.to(acc.device)


def _resume_or_refuse(state: TrainState) -> None:
    """Resume from ``recipe.resume`` (a folder or "auto"), or refuse to overwrite a run."""
    cfg, acc, out = state.config, state.accelerator, state.output_dir
    resume_from = None
    if cfg.resume == "auto":
        resume_from = ckpt.latest_valid(out / "checkpoints", log=acc.print)
        if resume_from is None:
            acc.print(f"resume=auto: no valid checkpoint in {out / 'checkpoints'}; starting fresh")
    elif cfg.resume:
        resume_from = Path(cfg.resume)
    elif ckpt.list_checkpoints(out / "checkpoints"):
        raise GanforgeError(
            f"{out} already holds checkpoints of an earlier run; pass resume=auto to continue "
            f"it, or out_dir=OTHER_FOLDER for a new run"
        )
    if resume_from is not None:
        load_checkpoint(state, resume_from)
        acc.print(f"resumed from {resume_from} at step {state.step}")


def _batches(state: TrainState, loader: DataLoader):
    """Endless batches; remembers the position (epoch, batch) for exact resume."""
    acc = state.accelerator
    while True:
        loader.set_epoch(state.epoch)
        it = acc.skip_first_batches(loader, state.batch_in_epoch) if state.batch_in_epoch else loader
        for batch in it:
            state.batch_in_epoch += 1
            yield batch
        state.epoch, state.batch_in_epoch = state.epoch + 1, 0


def discriminator_loss(state: TrainState, batch: Any, penalties: list) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """D's loss for one batch, with the given ``(Penalty, fn)`` pairs added (in fp32, scaled
    by ``weight * every`` for lazy regularisation), and the statistics to log."""
    acc = state.accelerator
    with state.autocast():
        d = state.objective.d_loss(batch)
    loss_d, stats = d.loss, dict(d.stats)
    for p, fn in penalties:
        with torch.autocast(acc.device.type, enabled=False):  # penalties in fp32
            value = fn(state.discriminator, d.real, d.fake)
        stats[f"penalty_{p.name}"] = value.detach()
        loss_d = loss_d + (p.weight * p.every) * value
    return loss_d, stats


def generator_loss(state: TrainState, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """G's loss (D must be frozen by the caller) and the statistics to log."""
    with state.autocast():
        return state.objective.g_loss(batch)


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


def nonfinite_stop(state: TrainState, in_a_row: int) -> GanforgeError:
    """The error that stops a run on non-finite losses (``train.nonfinite``/``max_nonfinite``)."""
    return GanforgeError(
        f"training stopped at step {state.step}: non-finite losses ({in_a_row} in a row). "
        f"Lower the learning rates, add a penalty (penalties: [{{name: r1, weight: 10}}]) or use "
        f"train.precision=no. Last checkpoint: {state.last_checkpoint or 'none'}"
    )


class EagerStep:
    """One training step in plain PyTorch (any device, any number of processes, any plugin):
    ``n_critic`` D updates on fresh batches, one G update with D frozen, the EMA update.

    A non-finite loss skips the whole step's remaining updates (checked with one scalar
    synchronisation per loss). ``take()`` returns the summed logged values since its last call.
    """

    def __init__(self, state: TrainState, penalties: list):
        self.state, self.penalties = state, penalties
        acc = state.accelerator
        self.batches = _batches(state, state.loader)
        self.G_plain = acc.unwrap_model(state.generator)  # once: ~0.4 ms a call on a CPU
        # Accelerate's optimizer wrapper re-checks optional packages and signatures on every
        # zero_grad/step (~1 ms per step on a 2-core CPU, measured with benchmarks/throughput.py).
        # Without a GradScaler (fp16) it only forwards to the wrapped optimizer, so do that.
        direct = getattr(acc, "scaler", None) is None
        self.opt_d = state.opt_d.optimizer if direct else state.opt_d
        self.opt_g = state.opt_g.optimizer if direct else state.opt_g
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.consecutive_bad = 0

    def take(self) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
        """Sums of the logged values over the good steps since the last call, and how many
        steps each sum holds (a lazy penalty's value is there only when it was computed)."""
        sums, counts = self.sums, self.counts
        self.sums, self.counts = {}, {}
        return sums, counts

    def sync(self) -> None:
        """Nothing to do: the eager step keeps its counters in the state."""

    def __call__(self) -> None:
        state, cfg, t = self.state, self.state.config, self.state.config.train
        acc, D = state.accelerator, state.discriminator
        if cfg.optim.lr_decay == "linear":  # a function of the step alone: nothing to checkpoint
            factor = 1.0 - state.step / t.steps
            for opt, lr in ((self.opt_d, cfg.optim.lr_d), (self.opt_g, cfg.optim.lr_g)):
                for group in opt.param_groups:
                    group["lr"] = lr * factor
        # --- discriminator: n_critic updates on fresh real batches
        bad, stats = False, {}
        for _ in range(t.n_critic):
            batch = next(self.batches)
            state.d_steps += 1
            due = [(p, fn) for p, fn in self.penalties if state.d_steps % p.every == 0]
            loss_d, new_stats = discriminator_loss(state, batch, due)
            stats.update(new_stats)  # the last D step's, and any penalty computed in this step
            self.opt_d.zero_grad(set_to_none=True)
            if not _finite(loss_d):  # one scalar sync per step: never apply a NaN/Inf update
                bad = True
                break
            acc.backward(loss_d)
            self.opt_d.step()

        # --- generator: D frozen, so its gradients are neither computed nor all-reduced
        if not bad:
            D.requires_grad_(False)
            loss_g, g_stats = generator_loss(state, batch)
            self.opt_g.zero_grad(set_to_none=True)
            if _finite(loss_g):
                acc.backward(loss_g)
                self.opt_g.step()
            else:
                bad = True
            D.requires_grad_(True)
        else:
            loss_g, g_stats = torch.full((), float("nan"), device=acc.device), {}
        if bad:
            state.skipped += 1
            self.consecutive_bad += 1
            acc.print(f"step {state.step + 1}: non-finite loss (D {float(loss_d.detach())}, G {float(loss_g.detach())}); "
                      f"update skipped ({state.skipped} skipped so far)")
            if t.nonfinite == "stop" or self.consecutive_bad >= t.max_nonfinite:
                raise nonfinite_stop(state, self.consecutive_bad)
            return
        self.consecutive_bad = 0
        if state.ema is not None:
            if state.step < t.ema_start:
                state.ema.module.load_state_dict(self.G_plain.state_dict())
            else:
                state.ema.update_parameters(self.G_plain)
        for k, v in {"loss_d": loss_d, "loss_g": loss_g, **stats, **g_stats}.items():
            v = v.detach().float()  # accumulated on the device; synchronised only when logging
            self.sums[k] = self.sums[k] + v if k in self.sums else v
            self.counts[k] = self.counts.get(k, 0) + 1


def _run(state: TrainState, plugins: PluginManager, stepper: Any, metrics, pause_hook) -> None:
    acc, cfg, t, log = state.accelerator, state.config, state.config.train, state.config.log
    objective = state.objective
    main = acc.is_main_process
    fixed_noise = objective.grid_noise(log.n_samples, acc.device, torch.Generator(acc.device).manual_seed(cfg.seed))
    metrics_file = state.output_dir / "metrics.jsonl"
    if cfg.log.wandb:
        _init_wandb(acc, cfg)

    interrupted: list[str] = []

    def _on_signal(signum, _frame):  # finish the step, then checkpoint and exit
        interrupted.append(signal.Signals(signum).name)

    old_handlers = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)} \
        if main and _is_main_thread() else {}

    if main:
        plugins.train_start(state)
    from tqdm.auto import tqdm

    bar = tqdm(total=t.steps, initial=state.step, disable=not (main and log.progress),
               desc=cfg.name, dynamic_ncols=True)
    window_start, window_steps = time.perf_counter(), 0
    batch_size = cfg.data.batch_size * acc.num_processes

    while state.step < t.steps and not interrupted:
        stepper()  # n_critic D updates, one G update, EMA (eager, or one CUDA graph replay)
        state.step += 1
        window_steps += 1
        bar.update(1)

        logs: dict[str, Any] = {}
        last = state.step == t.steps or bool(interrupted)
        if state.step % log.every == 0 or last:
            sums, counts = stepper.take()  # the first synchronisation since the last log
            elapsed = time.perf_counter() - window_start
            names = sorted(k for k in sums if counts[k])
            logs = {}
            if names:  # means over the steps that computed each value (the same on every rank)
                values = acc.reduce(torch.stack([sums[k] for k in names]), reduction="mean")
                values = values / torch.tensor([counts[k] for k in names], device=values.device)
                logs = {k: float(v) for k, v in zip(names, values.tolist(), strict=True)}
            logs.update(step=state.step, epoch=state.epoch, skipped=state.skipped,
                        images_per_s=window_steps * t.n_critic * batch_size / max(elapsed, 1e-9))
            state.history.append(logs)
            if main:
                with open(metrics_file, "a") as f:
                    f.write(json.dumps(logs) + "\n")
                if "loss_d" in logs:
                    bar.set_postfix(d=f"{logs['loss_d']:.3f}", g=f"{logs['loss_g']:.3f}")
            acc.log({f"train/{k}": v for k, v in logs.items() if k != "step"}, step=state.step)
            window_start, window_steps = time.perf_counter(), 0
        if main:
            plugins.step_end(state, logs)

        if log.sample_every and state.step % log.sample_every == 0 and not last:
            _write_samples(state, fixed_noise, f"samples-{state.step:08d}")
        if log.eval_every and metrics and state.step % log.eval_every == 0 and not last:
            _evaluate(state, metrics)
        if log.checkpoint_every and state.step % log.checkpoint_every == 0 and not last:
            stepper.sync()
            save_checkpoint(state, plugins, pause_hook)

    bar.close()
    stepper.sync()
    for s, h in old_handlers.items():
        signal.signal(s, h)

    # --- the end: checkpoint, samples, metrics, plots
    path = save_checkpoint(state, plugins, pause_hook)
    sample_path = _write_samples(state, fixed_noise, "samples-final")
    if metrics:
        _evaluate(state, metrics)
    if main and state.history:
        plots.save_loss_curve(state.history, state.output_dir / "losses.png")
    if main:
        where = "scatter plot" if len(state.dataset.sample_shape) == 1 else "sample grid"
        acc.print(f"{where}: {sample_path}")
        acc.print(f"loss curve: {state.output_dir / 'losses.png'}; metrics: {metrics_file}")
        if path is not None:
            acc.print(f"checkpoint: {path}")
        if interrupted:
            acc.print(f"interrupted by {interrupted[0]} at step {state.step}; resume with: "
                      f"ganforge train RECIPE resume=auto out_dir={state.output_dir}")
        plugins.train_end(state)
    acc.end_training()


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _init_wandb(acc: Accelerator, cfg: Recipe) -> None:
    if not os.environ.get("WANDB_MODE") and not os.environ.get("WANDB_API_KEY"):
        os.environ["WANDB_MODE"] = "offline"
        acc.print("wandb: no WANDB_API_KEY, logging offline (upload later with `wandb sync`)")
    acc.init_trackers(cfg.log.wandb_project, config=cfg.to_dict(),
                      init_kwargs={"wandb": {"name": cfg.name, "dir": str(cfg.output_dir)}})


@torch.no_grad()
def generate(state: TrainState, noise: Any) -> torch.Tensor:
    G = state.sampler_generator
    was_training = G.training
    G.eval()
    try:
        return state.objective.generate(G, noise).float()
    finally:
        G.train(was_training)


def _write_samples(state: TrainState, noise: Any, stem: str) -> Path | None:
    if not state.accelerator.is_main_process:
        return None
    samples = generate(state, noise)
    path = state.output_dir / f"{stem}.png"
    if samples.dim() == 2:  # vector data: scatter plot against the data
        n = min(len(state.dataset), 2500)
        g = torch.Generator().manual_seed(0)
        idx = torch.randperm(len(state.dataset), generator=g)[:n].tolist()
        data = state.dataset.__getitems__(idx) if hasattr(state.dataset, "__getitems__") else None
        data = data[0] if isinstance(data, tuple) else data
        more = generate(state, state.objective.noise(2500, state.accelerator.device,
                                                     torch.Generator(state.accelerator.device).manual_seed(1)))
        plots.save_scatter(more, data, path, f"{state.config.name}: step {state.step}")
    else:
        plots.save_grid(samples, path, state.objective.grid_nrow)
    if state.config.log.wandb:
        state.accelerator.log({"samples": _wandb_image(path)}, step=state.step)
    return path


def _wandb_image(path: Path) -> Any:
    import wandb

    return wandb.Image(str(path))


def _evaluate(state: TrainState, metrics: dict[str, Any]) -> dict[str, float]:
    if not state.accelerator.is_main_process:
        return {}
    n = state.config.log.eval_samples
    noise = state.objective.noise(n, state.accelerator.device,
                                  torch.Generator(state.accelerator.device).manual_seed(state.config.seed + 1))
    results = evaluate_samples(generate(state, noise).cpu(), state.dataset, metrics)
    state.metrics = results
    row = {"step": state.step, **{f"eval/{k}": v for k, v in results.items()}}
    state.history.append(row)
    with open(state.output_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    state.accelerator.log({f"eval/{k}": v for k, v in results.items()}, step=state.step)
    state.accelerator.print("eval: " + ", ".join(f"{k}={v:.4g}" for k, v in results.items()))
    return results


def evaluate_samples(samples: torch.Tensor, dataset: Any, metrics: dict[str, Any]) -> dict[str, float]:
    """Run metrics on given samples (used by ``ganforge eval``)."""
    out: dict[str, float] = {}
    for name, metric in metrics.items():
        out.update({f"{name}/{k}": float(v) for k, v in metric(samples, dataset).items()})
    return out


def _finite(x: torch.Tensor) -> bool:
    return bool(torch.isfinite(x.detach()).all())
