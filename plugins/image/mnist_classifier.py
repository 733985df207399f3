"""The small MNIST classifier behind the MNIST-family metrics (architecture only).

Trained by ``scripts/train_mnist_classifier.py`` on the MNIST training set; its weights ship in
the package (``plugins/image/assets/mnist_classifier.safetensors``, ~0.8 MB), so nothing is ever
downloaded. Penultimate features (128-d) are what the Fréchet distance and precision/recall use.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

WEIGHTS = Path(__file__).parent / "assets" / "mnist_classifier.safetensors"


class MNISTClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),  # 14
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),  # 7
            nn.Flatten(), nn.Dropout(0.3), nn.Linear(64 * 7 * 7, 128), nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for images in [-1, 1], shape (N, 1, 28, 28)."""
        return self.head(self.features(x))


def load_classifier(path: Path = WEIGHTS) -> MNISTClassifier:
    from safetensors.torch import load_file

    from ganforge.errors import GanforgeError

    if not path.is_file():
        raise GanforgeError(f"MNIST classifier weights missing at {path}; recreate them with "
                            f"python scripts/train_mnist_classifier.py")
    model = MNISTClassifier()
    model.load_state_dict(load_file(str(path)))
    return model.eval()
