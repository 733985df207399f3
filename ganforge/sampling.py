"""The sample-file format of ``ganforge sample --out X.npz | X.safetensors``, as plugins and
scripts read it (``ganforge.sampling.write_sample_file`` / ``read_sample_file``): a thin re-export of :mod:`ganforge.observe.sampling`, where it lives (the guide's "What a plugin
may rely on"; ``tests/test_layout.py`` checks that these names are the same objects)."""
from ganforge.observe.sampling import (  # noqa: F401
    read_sample_file,
    write_sample_file,
)

__all__ = ["read_sample_file", "write_sample_file"]
