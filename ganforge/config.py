"""Recipes as the public API names them (``ganforge.config.Ramp``, ``Recipe``, ``load_recipe``):
a thin re-export of the types (:mod:`ganforge.recipe.types`) and of loading with the installed
plugins' recipes (:mod:`ganforge.contract.recipes`)."""
from ganforge.contract.recipes import load_recipe  # noqa: F401
from ganforge.recipe.types import (  # noqa: F401
    Data,
    Log,
    Optim,
    OptimizerSettings,
    Part,
    Penalty,
    PhaseSettings,
    Ramp,
    Recipe,
    Schedule,
    Train,
)

__all__ = ["Data", "Log", "Optim", "OptimizerSettings", "Part", "Penalty", "PhaseSettings", "Ramp", "Recipe",
           "Schedule", "Train", "load_recipe"]
