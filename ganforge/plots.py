"""Sample grids (torchvision), 2-D scatter plots and loss curves (matplotlib, headless)."""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torchvision.utils import save_image


def save_grid(samples: torch.Tensor, path: Path, nrow: int | None = None) -> None:
    """Images in [-1, 1] as one PNG grid of ``nrow`` images per row (default: as square as
    possible)."""
    nrow = nrow or max(1, int(math.sqrt(len(samples))))
    save_image(samples.detach().float().cpu(), str(path), nrow=nrow, normalize=True,
               value_range=(-1.0, 1.0), padding=2)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_scatter(samples: torch.Tensor, data: torch.Tensor, path: Path, title: str = "") -> None:
    """2-D samples (orange) over data points (blue)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    d, s = data.detach().float().cpu().numpy(), samples.detach().float().cpu().numpy()
    ax.scatter(d[:, 0], d[:, 1], s=2, alpha=0.3, label="data", color="tab:blue")
    ax.scatter(s[:, 0], s[:, 1], s=2, alpha=0.5, label="generated", color="tab:orange")
    ax.set_aspect("equal")
    ax.legend(loc="upper right", markerscale=4)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def save_loss_curve(history: list[dict], path: Path) -> None:
    """D and G losses (and mean D outputs) against the generator step."""
    plt = _pyplot()
    rows = [r for r in history if "loss_d" in r]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7, 6), dpi=100, sharex=True)
    steps = [r["step"] for r in rows]
    for key, ax in (("loss_d", ax1), ("loss_g", ax1), ("d_real", ax2), ("d_fake", ax2)):
        ax.plot(steps, [r.get(key, float("nan")) for r in rows], label=key)
    ax1.set_ylabel("loss")
    ax2.set_ylabel("mean D output")
    ax2.set_xlabel("generator step")
    ax1.legend()
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
