"""The training film of 2-D runs, as GAN Lab shows it (Kahng et al. 2019).

A lifecycle plugin. With ``log.film_every: N`` on a run whose samples are 2-D points (the toy
mixtures), at the first log step at least N steps after the last frame (frames are taken *at
log time*, so the other steps pay nothing and the CUDA-graph path is untouched), and at step 0
and the last step, it records one frame into ``<run>/film/frame-<step>.safetensors``:

- ``fake``: the generator's points for a fixed noise batch (``POINTS`` of them);
- ``d``: the discriminator's output (``loss.score``: a probability for BCE-type losses) on a
  ``GRID`` x ``GRID`` grid over the plane, the heat map;
- ``arrows`` at ``arrow_at`` (the first ``ARROWS`` fakes): -dL_G/dx, the direction in which the
  generator's loss pushes each fake, computed per sample through the run's loss;
- ``manifold``: G's image of a ``MANIFOLD`` x ``MANIFOLD`` grid on a 2-D plane of noise space
  (z's first two coordinates, or two fixed random directions when z has more), i.e. how G
  folds the noise onto the data.

``film/meta.json`` holds the real points, the plane's bounds and the run's name. The networks
are the live (not EMA) G and D, in eval mode, without gradients for their weights; no random
number is drawn from the run's generators, so a run with a film trains bitwise like one
without. ``ganforge animate RUN`` (or ``log.animate: true``, at the end) turns the frames
into a GIF and an offline HTML page with a step slider (:mod:`ganforge.observe.animate`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ganforge import hookimpl
from ganforge.data import samples_at
from ganforge.errors import GanforgeError
from ganforge.observe.files import atomic_path, write_text

__all__ = ["FILM", "d_field", "g_arrows", "record_frame"]

FILM, POINTS, GRID, ARROWS, MANIFOLD = "film", 512, 64, 64, 21


def d_field(D: torch.nn.Module, loss: Any, points: torch.Tensor) -> torch.Tensor:
    """D's output as the run shows it (``loss.score`` of its logits) at each point."""
    with torch.no_grad():
        return loss.score(D(points).float().flatten())


def g_arrows(D: torch.nn.Module, loss: Any, fakes: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """-dL_G/dx for each fake on its own: the generator loss of that one sample's D output."""
    x = fakes.detach().clone().requires_grad_(True)
    logits = D(x).flatten()
    real_logits = D(real[: len(x)]).flatten().detach() if getattr(loss, "uses_real_logits", False) else None
    per_sample = loss.g_loss(logits, real_logits) * len(x)  # g_loss is a mean over the batch
    (grad,) = torch.autograd.grad(per_sample, x)
    return -grad


def _plane(real: torch.Tensor) -> tuple[float, float, float, float]:
    lo, hi = real.min(0).values, real.max(0).values
    pad = 0.15 * (hi - lo).max()
    return float(lo[0] - pad), float(hi[0] + pad), float(lo[1] - pad), float(hi[1] + pad)


class Film:
    def __init__(self, state: Any):
        self.folder = state.output_dir / FILM
        dev = state.accelerator.device
        g = torch.Generator().manual_seed(state.config.seed + 7)  # its own: the run's RNG is untouched
        pick = torch.randperm(len(state.dataset), generator=g)[:POINTS].tolist()
        self.real = samples_at(state.dataset, pick).float().cpu()
        self.bounds = _plane(self.real)
        x0, x1, y0, y1 = self.bounds
        xs, ys = torch.linspace(x0, x1, GRID), torch.linspace(y0, y1, GRID)
        self.grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 2).to(dev)
        self.noise = state.system.noise(POINTS, "cpu", g)
        self.noise = self.noise.to(dev) if torch.is_tensor(self.noise) else tuple(n.to(dev) for n in self.noise)
        z_dim = state.system.z_dim
        axes = torch.eye(z_dim)[:2] if z_dim >= 2 else None
        if z_dim > 2:
            axes = torch.linalg.qr(torch.randn(z_dim, 2, generator=g)).Q.T
        t = torch.linspace(-2, 2, MANIFOLD)
        a, b = torch.meshgrid(t, t, indexing="xy")
        self.plane = None if axes is None else (a.reshape(-1, 1) * axes[0] + b.reshape(-1, 1) * axes[1]).to(dev)
        self.folder.mkdir(parents=True, exist_ok=True)
        # a resumed run goes on from its last frame; frames after the step it resumed from
        # belong to a lineage that was abandoned (ganforge.training.checkpoint.set_aside_after)
        steps = [int(f.stem.split("-")[1]) for f in self.folder.glob("frame-*.safetensors")]
        for step in [s for s in steps if s > state.step]:
            (self.folder / f"frame-{step:08d}.safetensors").unlink()
        self.last = max([s for s in steps if s <= state.step], default=-1)
        meta = {"run": state.config.name, "bounds": self.bounds, "grid": GRID, "manifold": MANIFOLD,
                "score": "probability" if getattr(state.system.loss, "probabilistic", False) else "score",
                "real": self.real.tolist()}
        write_text(self.folder / "meta.json", json.dumps(meta))

    def record(self, state: Any) -> Path:
        G, D, loss = state.system.network("G"), state.system.network("D"), state.system.loss
        modes = (G.training, D.training)
        G.eval(), D.eval()
        try:
            with torch.no_grad():
                fake = state.system.generate({"G": G}, self.noise).float()
                manifold = state.system.generate({"G": G}, self.plane).float() if self.plane is not None \
                    else torch.zeros(0, 2)
            frame = record_frame(D, loss, fake, self.grid, self.real.to(fake.device), manifold)
        finally:
            G.train(modes[0]), D.train(modes[1])
        from safetensors.torch import save_file

        self.last = state.step
        path = self.folder / f"frame-{state.step:08d}.safetensors"
        with atomic_path(path) as tmp:  # a frame is complete or absent, never cut off
            save_file({k: v.detach().float().cpu().clone() for k, v in frame.items()}, str(tmp))
        return path


def record_frame(D, loss, fake, grid, real, manifold) -> dict[str, torch.Tensor]:
    return {"fake": fake, "d": d_field(D, loss, grid).reshape(GRID, GRID), "arrow_at": fake[:ARROWS],
            "arrows": g_arrows(D, loss, fake[:ARROWS], real), "manifold": manifold.reshape(-1, 2)}


_films: dict[int, Film] = {}


def _unsupported(state) -> str | None:
    """Why this run can have no film (None: it can)."""
    if tuple(state.dataset.sample_shape) != (2,):
        return f"this run's samples have shape {tuple(state.dataset.sample_shape)}"
    if set(state.nets) != {"G", "D"} or not hasattr(state.system, "loss"):
        return f"this run's system has networks {', '.join(state.nets)}"
    if not torch.is_tensor(state.system.noise(2, "cpu", torch.Generator())):
        return "this run's generator takes more than a noise vector (class labels?)"
    D = state.system.network("D")
    training = D.training
    D.eval()  # (eval: a probe must not move BatchNorm statistics)
    try:
        with torch.no_grad():
            out = D(torch.zeros(2, 2, device=state.accelerator.device))
    except (TypeError, ValueError, RuntimeError) as err:
        return f"its D cannot judge a point alone ({err})"
    finally:
        D.train(training)
    if not torch.is_tensor(out) or out.numel() != 2:
        return "its D gives more than one value per point"
    return None


@hookimpl
def ganforge_train_start(state):
    every = state.config.log.film_every
    if not every:
        return
    why = _unsupported(state)
    if why:
        import warnings

        warnings.warn(f"log.film_every: the training film shows unconditional 2-D runs (one G of a noise "
                      f"vector, one D of a point); {why}, so there is no film (ganforge animate RUN "
                      f"animates its sample grids instead)")
        return
    _films[id(state)] = Film(state)
    if state.step == 0:
        _films[id(state)].record(state)


@hookimpl
def ganforge_step_end(state, logs):
    film = _films.get(id(state))
    if film is not None and logs and state.step - film.last >= state.config.log.film_every:
        film.record(state)


@hookimpl
def ganforge_train_end(state):
    film = _films.pop(id(state), None)
    if film is not None and not (film.folder / f"frame-{state.step:08d}.safetensors").exists():
        film.record(state)
    if state.config.log.animate:
        from ganforge.observe.animate import animate

        try:
            paths = animate(state.output_dir)
        except GanforgeError as err:  # (nothing to animate: the run itself succeeded)
            state.accelerator.print(f"animation: none written: {err}")
            paths = []
        for path in paths:
            state.accelerator.print(f"animation: {path}")
