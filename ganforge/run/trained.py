"""A trained run, loaded: :class:`Run` (its recipe, system and networks, with ``generate``,
``translate``, ``vocode`` and ``network``) and :func:`load_run`. The public API re-exports both
(:mod:`ganforge.api`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ganforge.errors import GanforgeError
from ganforge.recipe.types import Recipe

__all__ = ["Run", "load_run"]


@dataclass
class Run:
    """A trained run, loaded: the system of its recipe with every network's weights (EMA copies
    where the run kept them, unless ``ema=False``), in eval mode on ``device``."""

    recipe: Recipe
    system: Any  # ganforge.contract.system.GANSystem
    nets: dict[str, torch.nn.Module]
    step: int
    checkpoint: Path  # the checkpoint folder loaded
    device: torch.device

    def network(self, name: str) -> torch.nn.Module:
        """One network by the system's name (``G``, ``D``, ``G_AB``, an encoder ``E``, ...)."""
        if name not in self.nets:
            raise GanforgeError(f"this run has no network '{name}'; its networks: {', '.join(self.nets)}")
        return self.nets[name]

    def generate(self, n: int = 64, *, seed: int = 0, labels: Any = None, truncation: float | None = None
                 ) -> torch.Tensor:
        """``n`` samples, as ``ganforge sample --seed`` draws them (the same seed gives the same
        samples); ``labels`` (class-conditional runs): one class index for all, or one per sample;
        ``truncation`` (runs with a W space: stylegan2): psi in [0, 1], 1 none, 0 the mean w (a
        conditional run's: its class's)."""
        from ganforge.observe.sampling import rows, sampling_mode

        if n < 1:
            raise GanforgeError(f"generate needs n >= 1, got {n}")
        controls = sampling_controls(self.system, self.recipe.objective.name, truncation)
        gen = torch.Generator().manual_seed(seed)
        extra = {}
        if labels is not None:
            if not getattr(self.system, "num_classes", None):
                raise GanforgeError(f"labels need a class-conditional run; this run's objective is "
                                    f"'{self.recipe.objective.name}'")
            classes = self.system.num_classes
            try:
                labels = torch.as_tensor(labels)
            except (TypeError, ValueError, RuntimeError):
                raise GanforgeError(f"labels must be a class index or one per sample, got {labels!r}") from None
            if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool or labels.dim() > 1 \
                    or (labels.dim() == 1 and len(labels) != n):
                raise GanforgeError(f"labels must be one class index, or {n} of them (one per sample), got "
                                    f"{labels.dtype} of shape {tuple(labels.shape)}")
            labels = labels.long()
            if labels.numel() and (labels.min() < 0 or labels.max() >= classes):
                raise GanforgeError(f"labels must be classes 0 to {classes - 1} of this run, got "
                                    f"{labels.min().item() if labels.min() < 0 else labels.max().item()}")
            extra["labels"] = labels.expand(n).clone() if labels.dim() == 0 else labels
        noise = self.system.noise(n, "cpu", gen, **extra)
        noise = tuple(x.to(self.device) for x in noise) if isinstance(noise, (tuple, list)) else noise.to(self.device)
        total = len(noise[0]) if isinstance(noise, tuple) else len(noise)
        with torch.no_grad(), sampling_mode(self.system, self.nets):
            return torch.cat([self.system.generate(self.nets, rows(noise, i, i + 1024), **controls).float()
                              for i in range(0, total, 1024)])

    def translate(self, images: torch.Tensor, direction: str = "AtoB") -> torch.Tensor:
        """Image-to-image runs: ``images`` (N, C, H, W) in [-1, 1] translated in ``direction``."""
        directions = getattr(self.system, "directions", None)
        if not directions or not callable(getattr(self.system, "translate", None)):
            raise GanforgeError(f"translate needs an image-to-image run (objective pix2pix or cyclegan); this "
                                f"run's objective is '{self.recipe.objective.name}'")
        if direction not in directions:
            raise GanforgeError(f"direction {direction}: this run translates {', '.join(directions)}")
        with torch.no_grad():
            return self.system.translate(self.nets, images.to(self.device).float(), direction).float()

    def directions(self, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
        """Runs with a W space (stylegan2): SeFa's ``k`` closed-form semantic directions in W,
        largest first, and the standard deviation of w along each: ``(directions (k, w_dim),
        sigmas (k,))``."""
        with torch.no_grad():
            return self._w_space("directions")(self.nets, k)

    def direction_grid(self, k: int = 5, *, steps: int = 7, span: float = 3.0, seed: int = 0,
                       label: int | None = None) -> torch.Tensor:
        """Images of an edit grid: a row per direction, ``steps`` columns from -span to +span sigmas."""
        from ganforge.observe.sampling import sampling_mode

        with torch.no_grad(), sampling_mode(self.system, self.nets):
            return self._w_space("direction_grid")(self.nets, k, steps, span, seed, label)[0].float()

    def mixing_grid(self, n: int = 4, *, seed: int = 0, label: int | None = None) -> torch.Tensor:
        """Images of a style-mixing grid ((n + 1) per row; see ``ganforge sample --mix``)."""
        from ganforge.observe.sampling import sampling_mode

        with torch.no_grad(), sampling_mode(self.system, self.nets):
            return self._w_space("mixing_grid")(self.nets, n, seed, label)[0].float()

    def _w_space(self, what: str) -> Any:
        return w_space(self.system, self.recipe.objective.name, what)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Autoencoder runs (objective vqgan): ``images`` (N, C, H, W) in [-1, 1] -> their code
        indices (N, h, w)."""
        with torch.no_grad():
            return self._coder("encode")(self.nets, images.to(self.device).float())

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """Autoencoder runs: code indices (N, h, w) -> images (N, C, H, W)."""
        with torch.no_grad():
            return self._coder("decode")(self.nets, torch.as_tensor(indices, device=self.device).long()).float()

    def _coder(self, what: str) -> Any:
        if not callable(getattr(self.system, what, None)):
            raise GanforgeError(f"{what} needs an autoencoder run (objective vqgan); this run's objective is "
                                f"'{self.recipe.objective.name}'")
        return getattr(self.system, what)

    def vocode(self, audio: torch.Tensor) -> torch.Tensor:
        """Vocoder runs: a waveform (T,) at the run's sample rate, in [-1, 1] -> its mel -> G -> (T,)."""
        if not callable(getattr(self.system, "vocode", None)):
            raise GanforgeError(f"vocode needs a vocoder run (objective hifigan); this run's objective is "
                                f"'{self.recipe.objective.name}'")
        from ganforge.observe.sampling import sampling_mode

        with torch.no_grad(), sampling_mode(self.system, self.nets):
            return self.system.vocode(self.nets, audio.to(self.device).float().reshape(-1)).float()


def w_space(system: Any, objective: str, what: str) -> Any:
    """The system's latent control ``what`` (``directions``, ``direction_grid``, ``mixing_grid``),
    or one line naming the runs that have it."""
    method = getattr(system, what, None)
    if not callable(method):
        raise GanforgeError(f"{what.replace('_', ' ')} needs a run with a W space (objective stylegan2); this run's "
                            f"objective is '{objective}'")

    def checked(*args: Any) -> Any:
        try:
            return method(*args)
        except ValueError as err:  # (a setting the system cannot do: one line)
            raise GanforgeError(f"{what.replace('_', ' ')}: {err}") from None

    return checked


def sampling_controls(system: Any, objective: str, truncation: float | None) -> dict[str, float]:
    """The keyword arguments of ``system.generate`` for the latent controls asked for, checked:
    ``truncation`` psi in [0, 1], for a system whose ``generate`` takes it (a W space)."""
    import inspect

    if truncation is None:
        return {}
    if isinstance(truncation, bool) or not isinstance(truncation, (int, float)) or not 0 <= truncation <= 1:
        raise GanforgeError(f"truncation is psi in [0, 1] (1: none, 0: the mean w), got {truncation!r}")
    if "truncation" not in inspect.signature(system.generate).parameters:
        raise GanforgeError(f"truncation needs a run with a W space (objective stylegan2); this run's objective "
                            f"is '{objective}'")
    return {"truncation": float(truncation)}


def load_run(path: str | Path, *, device: str | torch.device = "cpu", ema: bool = True) -> Run:
    """A run folder (its newest valid checkpoint) or a checkpoint folder, loaded as a :class:`Run`
    on ``device``. ``ema=False``: the raw networks instead of their EMA copies."""
    from ganforge.run.loading import load_for_sampling

    nets, system, recipe, meta = load_for_sampling(str(path), ema)
    device = torch.device(device)
    for module in nets.values():
        module.to(device)
    return Run(recipe, system, nets, int(meta["step"]), Path(meta["folder"]), device)
