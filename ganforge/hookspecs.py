"""The hook specifications as plugins read them (``ganforge.hookspecs``; ``ganforge.hookimpl``
is the marker): a thin re-export of :mod:`ganforge.contract.hookspecs`, where it lives (the guide's "What a plugin
may rely on"; ``tests/test_layout.py`` checks that these names are the same objects)."""
from ganforge.contract.hookspecs import (  # noqa: F401
    PROJECT_NAME,
    ganforge_checkpoint_saved,
    ganforge_register_augments,
    ganforge_register_datasets,
    ganforge_register_discriminators,
    ganforge_register_generators,
    ganforge_register_losses,
    ganforge_register_metrics,
    ganforge_register_networks,
    ganforge_register_objectives,
    ganforge_register_penalties,
    ganforge_register_recipes,
    ganforge_step_end,
    ganforge_train_end,
    ganforge_train_start,
    hookimpl,
    hookspec,
)

__all__ = ["PROJECT_NAME", "ganforge_checkpoint_saved", "ganforge_register_augments", "ganforge_register_datasets", "ganforge_register_discriminators", "ganforge_register_generators", "ganforge_register_losses", "ganforge_register_metrics", "ganforge_register_networks", "ganforge_register_objectives", "ganforge_register_penalties", "ganforge_register_recipes", "ganforge_step_end", "ganforge_train_end", "ganforge_train_start", "hookimpl", "hookspec"]
