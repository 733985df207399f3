"""Sample grids (torchvision), 2-D scatter plots and loss curves (matplotlib, headless)."""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torchvision.utils import save_image

from ganforge.observe.files import atomic_path


def save_grid(samples: torch.Tensor, path: Path, nrow: int | None = None) -> None:
    """Images in [-1, 1] as one PNG grid of ``nrow`` images per row (default: as square as
    possible)."""
    nrow = nrow or max(1, int(math.sqrt(len(samples))))
    with atomic_path(path) as tmp:
        save_image(samples.detach().float().cpu(), str(tmp), nrow=nrow, normalize=True,
                   value_range=(-1.0, 1.0), padding=2)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_scatter(samples: torch.Tensor, data: torch.Tensor | None, path: Path, title: str = "") -> None:
    """2-D samples (orange) over data points (blue; none: samples alone)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    s = samples.detach().float().cpu().numpy()
    if data is not None and len(data):
        d = data.detach().float().cpu().numpy()
        ax.scatter(d[:, 0], d[:, 1], s=2, alpha=0.3, label="data", color="tab:blue")
    ax.scatter(s[:, 0], s[:, 1], s=2, alpha=0.5, label="generated", color="tab:orange")
    ax.set_aspect("equal")
    ax.legend(loc="upper right", markerscale=4)
    ax.set_title(title)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp)
    finally:
        plt.close(fig)


def save_loss_curve(history: list[dict], path: Path) -> None:
    """Every phase's loss (``loss_*``) and the other logged training values against the step."""
    plt = _pyplot()
    rows = [r for r in history if any(k.startswith("loss_") for k in r)]
    skip = {"step", "epoch", "skipped", "images_per_s"}
    keys = sorted({k for r in rows for k in r if k not in skip and not k.startswith("eval/")})
    losses = [k for k in keys if k.startswith("loss_")]
    others = [k for k in keys if not k.startswith("loss_")]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7, 6), dpi=100, sharex=True)
    steps = [r["step"] for r in rows]
    for group, ax in ((losses, ax1), (others, ax2)):
        for key in group:
            ax.plot(steps, [r.get(key, float("nan")) for r in rows], label=key)
    ax1.set_ylabel("loss")
    ax2.set_ylabel("logged values")
    ax2.set_xlabel("training step")
    ax1.legend(fontsize="small")
    if others:
        ax2.legend(fontsize="small")
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp)
    finally:
        plt.close(fig)
