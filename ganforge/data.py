"""The dataset contract as plugins import it (``from ganforge.data import TensorDataset``): a thin re-export of :mod:`ganforge.contract.data`, where it lives (the guide's "What a plugin
may rely on"; ``tests/test_layout.py`` checks that these names are the same objects)."""
from ganforge.contract.data import (  # noqa: F401
    TensorDataset,
    held_out_images,
    samples_at,
)

__all__ = ["TensorDataset", "held_out_images", "samples_at"]
