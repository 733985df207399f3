"""The dataset contract as plugins import it (``from ganforge.data import TensorDataset``): a
thin re-export of :mod:`ganforge.contract.data` and :mod:`ganforge.contract.formats` (image and
IDX files), where they live (the guide's "What a plugin may rely on"; ``tests/test_layout.py``
checks that these names are the same objects)."""
from ganforge.contract.data import (  # noqa: F401
    TensorDataset,
    held_out_images,
    samples_at,
)
from ganforge.contract.formats import (  # noqa: F401
    IMAGE_EXTENSIONS,
    find_idx_files,
    image_files,
    open_image,
    read_idx,
)

__all__ = ["IMAGE_EXTENSIONS", "TensorDataset", "find_idx_files", "held_out_images", "image_files", "open_image",
           "read_idx", "samples_at"]
