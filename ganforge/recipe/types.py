"""Recipes: the typed configuration of a training run (the types only: a leaf module that
imports nothing of ganforge but its errors; loading is :mod:`ganforge.recipe.load`).

A recipe is a YAML file holding only what differs from the defaults below. A part (generator,
discriminator, loss, objective, dataset, metric, penalty) is a name from the plugin registry
plus ``args`` for its factory; ``loss: hinge`` is short for ``loss: {name: hinge}``.

The objective is an adversarial system (:mod:`ganforge.contract.system`) that names its networks
and optimizers. ``generator:`` / ``discriminator:`` build every network of that kind;
``networks: {G_AB: {name: ..., args: ...}}`` sets one network by name, and
``optimizers: {D: {lr: 4e-4}}`` overrides one optimizer's settings.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Data", "Log", "Optim", "OptimizerSettings", "Part", "Penalty", "PhaseSettings", "Ramp", "Recipe",
           "Schedule", "Train"]


@dataclass
class Part:
    """A registered part by name, with the keyword arguments for its factory."""

    name: str = ""
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class Ramp:
    """A hyper-parameter that moves from ``initial`` to ``final`` between steps ``start`` and
    ``stop`` (each a step or a fraction of ``train.steps``), constant outside (R3GAN's
    schedules; :mod:`ganforge.recipe.ramps`). Given instead of a number for a penalty's ``weight`` or an
    optimizer's ``betas`` entry or ``weight_decay``."""

    initial: float = 0.0
    final: float = 0.0
    type: str = "cosine"  # cosine | linear
    start: int | float = 0
    stop: int | float | None = None  # unset: train.steps


@dataclass
class Penalty:
    """A regulariser applied every ``every`` runs of a phase with ``weight`` (a number or a ramp)."""

    name: str = ""
    weight: float | Ramp = 1.0
    every: int = 1
    args: dict[str, Any] = field(default_factory=dict)
    networks: list[str] = field(default_factory=list)  # which discriminators; [] = every one a phase penalises


@dataclass
class Schedule:
    """A learning-rate schedule: a multiplier of the base rate, a function of the step alone
    (so a resumed run continues it exactly and the CUDA-graph step reads it from a tensor)."""

    type: str = "constant"  # constant | linear | cosine | exponential
    warmup: int | float = 0  # steps (or a fraction of train.steps) of linear warm-up from 0 first
    start: int | float = 0  # linear/exponential: constant until this step (or fraction of train.steps)
    final: float = 0.0  # linear/cosine: the multiplier reached at train.steps
    gamma: float = 0.999  # exponential: the multiplier per step or per epoch
    per: str = "step"  # exponential: step | epoch (an epoch of the training data, HiFi-GAN's 0.999)


@dataclass
class OptimizerSettings:
    """Overrides of one optimizer that the system declares (unset: the system's or ``optim``'s value)."""

    lr: float | None = None
    betas: list[float | Ramp] | None = None  # each a number or a ramp
    weight_decay: float | Ramp | None = None
    type: str | None = None  # a torch.optim optimizer by name: adam, adamw, sgd, rmsprop, ...
    args: dict[str, Any] | None = None  # more arguments of that optimizer: {eps: 1e-8, amsgrad: true}
    schedule: Schedule | None = None
    clip: float | None = None  # clip the gradient norm (L2, over this optimizer's parameters) to this


@dataclass
class PhaseSettings:
    """When one of the system's phases runs: from step ``start`` until before step ``stop``
    (each a step, or a fraction of ``train.steps``); unset: the system's (every step)."""

    start: int | float | None = None
    stop: int | float | None = None


@dataclass
class Data:
    name: str = "toy_grid"
    root: str | None = None  # folder holding the files; see each dataset's error for defaults
    download: bool = False  # let torchvision download MNIST / Fashion-MNIST / CIFAR-10
    args: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 64
    num_workers: int | str = "auto"  # DataLoader workers for datasets read from files; auto: cores - 1, up to 8
    on_device: bool | str = "auto"  # auto | true | false: keep an in-memory dataset on the GPU as uint8


@dataclass
class Optim:
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas: list[float | Ramp] = field(default_factory=lambda: [0.5, 0.999])  # each a number or a ramp
    weight_decay: float | Ramp = 0.0
    lr_decay: str = "none"  # none | linear (to 0 at train.steps), derived from the step: resumable
    lr_decay_start: int | float = 0  # linear: constant until this step (or this fraction of train.steps: 0.5), then to 0
    fused: bool | str = "auto"  # fused kernel (Adam, AdamW, SGD): auto (on CUDA, and always on the fast path) | true | false
    type: str = "adam"  # every optimizer's type (optimizers.<name>.type overrides): any torch.optim optimizer
    args: dict[str, Any] = field(default_factory=dict)  # more arguments for every optimizer of that type
    schedule: Schedule | None = None  # every optimizer's schedule (optimizers.<name>.schedule overrides)
    clip: float | None = None  # every optimizer's gradient-norm clip (optimizers.<name>.clip overrides)


@dataclass
class Train:
    steps: int = 1000  # generator steps
    n_critic: int = 1  # discriminator steps per generator step
    accumulate: int = 1  # each phase's batch (data.batch_size) in this many micro-batches, one update (less memory)
    z_dim: int = 100
    precision: str = "auto"  # auto | no | bf16 | fp16 (auto: bf16 for images on a bf16 GPU, else fp32)
    ema: float = 0.0  # decay of the generator's exponential moving average; 0 = off
    ema_start: int = 0  # generator step at which EMA averaging starts (copies before)
    ema_rampup: float = 0.0  # cap the EMA's half-life at this fraction of the images seen (StyleGAN2-ADA: 0.05); 0 = off
    cpu: bool = False  # train on the CPU even when a GPU is present
    threads: int | str = "auto"  # CPU threads: auto (idle cores; OMP_NUM_THREADS wins when set) | a number
    sync_bn: bool = False  # SyncBatchNorm across processes (CUDA GPUs only; not in penalised networks)
    tf32: bool = True  # CUDA: TF32 tensor cores for fp32 matmuls and convolutions (false: full fp32)
    channels_last: bool | str = "auto"  # auto (conv models on CUDA) | true | false
    cuda_graph: bool | str = "auto"  # whole step in one CUDA graph: auto (when possible) | true | false
    autocast_cache: bool | str = "auto"  # autocast's weight-cast cache: auto (on for the eager step, off on the graph path) | true | false
    nonfinite: str = "skip"  # skip | stop: what a NaN/Inf loss does to its step
    max_nonfinite: int = 10  # with skip: stop after this many non-finite steps in a row


@dataclass
class Log:
    every: int = 100  # steps between logged losses
    sample_every: int = 1000  # steps between sample grids / scatter plots; 0 = only at the end
    n_samples: int = 64  # size of the fixed noise batch for sample grids
    checkpoint_every: int = 0  # steps between checkpoints; 0 = only at the end
    checkpoint_minutes: float = 10.0  # also a checkpoint when this much wall time has passed; 0 = off
    keep: int = 3  # checkpoints kept
    eval_every: int = 0  # steps between metric evaluations; 0 = only at the end
    eval_samples: int = 2500
    eval_batch_size: int = 500  # samples generated per forward pass in an evaluation (each process a share)
    trackers: list[str] = field(default_factory=list)  # Accelerate's trackers: tensorboard, wandb, mlflow, aim, ...
    wandb: bool = False  # log to Weights & Biases through Accelerate's tracker (short for trackers: [wandb])
    wandb_project: str = "ganforge"
    progress: bool = True
    film_every: int = 0  # 2-D data: a training-film frame at the first log step N steps after the last; 0 = off
    animate: bool = False  # at the end: the film (or the sample grids) as a GIF and an HTML page


@dataclass
class Recipe:
    name: str = "run"
    seed: int = 0
    out_dir: str | None = None  # default: runs/<name>
    resume: str | None = None  # a checkpoint folder, or "auto" for the newest in out_dir
    data: Data = field(default_factory=Data)
    generator: Part = field(default_factory=lambda: Part("mlp"))
    discriminator: Part = field(default_factory=lambda: Part("mlp"))
    loss: Part = field(default_factory=lambda: Part("bce"))
    penalties: list[Penalty] = field(default_factory=list)
    objective: Part = field(default_factory=lambda: Part("unconditional"))
    networks: dict[str, Part] = field(default_factory=dict)  # per-network parts, by the system's names
    optimizers: dict[str, OptimizerSettings] = field(default_factory=dict)  # per-optimizer overrides
    phases: dict[str, PhaseSettings] = field(default_factory=dict)  # when each phase runs (a D that starts later)
    metrics: list[Part] = field(default_factory=list)
    augment: Part | None = None  # a registered augmentation of every image a discriminator sees
    optim: Optim = field(default_factory=Optim)
    train: Train = field(default_factory=Train)
    log: Log = field(default_factory=Log)

    @property
    def output_dir(self) -> Path:
        return Path(self.out_dir) if self.out_dir else Path("runs") / self.name

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
