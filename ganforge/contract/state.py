"""What a running job holds (:class:`TrainState`), handed to the lifecycle hooks."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch.optim.swa_utils import AveragedModel

from ganforge.recipe.types import Recipe
from ganforge.contract.system import GANSystem

__all__ = ["TrainState"]


@dataclass
class TrainState:
    """Everything a running job holds; handed to the lifecycle hooks.

    ``nets``, ``optimizers`` and ``emas`` are keyed by the names the system declares.
    ``generator``, ``discriminator``, ``ema`` and ``objective`` are shorthands for the classic
    two-network system (networks ``G`` and ``D``).
    """

    config: Recipe
    accelerator: Accelerator
    system: GANSystem
    nets: dict[str, torch.nn.Module]  # prepared (DDP-wrapped with several processes)
    output_dir: Path
    dataset: Any = None
    optimizers: dict[str, torch.optim.Optimizer] = field(default_factory=dict)
    emas: dict[str, AveragedModel] = field(default_factory=dict)
    base_lrs: dict[str, list[float]] = field(default_factory=dict)  # per optimizer, per param group
    loader: Any = None
    step: int = 0  # completed training steps
    phase_steps: dict[str, int] = field(default_factory=dict)  # runs of each phase (lazy penalties count these)
    epoch: int = 0  # data position: epoch and batches consumed in it
    batch_in_epoch: int = 0
    skipped: int = 0  # steps skipped for non-finite losses
    history: list[dict[str, Any]] = field(default_factory=list)
    last_checkpoint: Path | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    stepper: Any = None  # ganforge.training.step.TrainStep
    interrupted: str | None = None  # SIGINT / SIGTERM when a signal ended the run early
    autocast: Any = contextlib.nullcontext  # () -> the mixed-precision context of the losses
    augment: Any = None  # ganforge.training.augment_hooks.AugmentHooks: the recipe's augmentation, on the discriminators
    penalties: list = field(default_factory=list)  # (recipe entry, penalty object) pairs

    @property
    def objective(self) -> GANSystem:
        """The system (the recipe's ``objective``)."""
        return self.system

    @property
    def augmentation(self) -> Any:
        """The recipe's augmentation as its factory built it (``None`` without one)."""
        return None if self.augment is None else self.augment.augment

    @property
    def generator(self) -> torch.nn.Module:
        return self.nets["G"]

    @property
    def discriminator(self) -> torch.nn.Module:
        return self.nets["D"]

    @property
    def ema(self) -> AveragedModel | None:
        return self.emas.get("G")

    @property
    def d_steps(self) -> int:
        """Runs of the phase named ``D``."""
        return self.phase_steps.get("D", 0)

    @property
    def sampler_nets(self) -> dict[str, torch.nn.Module]:
        """The networks used for samples and evaluation: the EMA copy where one is kept,
        otherwise the network itself (unwrapped)."""
        unwrap = self.accelerator.unwrap_model
        return {n: self.emas[n].module if n in self.emas else unwrap(m) for n, m in self.nets.items()}
