"""Spectrogram pictures of audio examples (matplotlib, as ganforge's other plots)."""
from __future__ import annotations

from pathlib import Path

import torch

from ganforge.observe.files import atomic_path

__all__ = ["save_spectrograms"]


def save_spectrograms(rows: list[tuple[str, list[tuple[str, torch.Tensor]]]], mel: torch.nn.Module, path: Path) -> None:
    """One row per utterance (``(name, [(column title, waveform (T,)), ...])``), each column its
    log-mel spectrogram on a shared colour scale; written atomically as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = max(len(cols) for _, cols in rows)
    fig, axes = plt.subplots(len(rows), columns, figsize=(4.2 * columns, 1.9 * len(rows)), squeeze=False)
    with torch.no_grad():
        for r, (name, cols) in enumerate(rows):
            for c, (title, audio) in enumerate(cols):
                spec = mel(audio.float().reshape(1, 1, -1))[0].cpu().numpy()
                ax = axes[r][c]
                ax.imshow(spec, origin="lower", aspect="auto", vmin=-11.5, vmax=2.0, cmap="magma")
                ax.set_title(f"{name}: {title}", fontsize=8)
                ax.set_xticks([])
                ax.set_yticks([])
            for c in range(len(cols), columns):
                axes[r][c].axis("off")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
