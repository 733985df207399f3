"""The public Python API: train a recipe, load a trained run, use its networks.

    import ganforge

    state = ganforge.train("toy_grid", ["train.steps=500", "out_dir=runs/toy"])   # a recipe by name, path or Recipe
    run = ganforge.load_run("runs/toy")              # its newest checkpoint (or a checkpoint folder)
    x = run.generate(16, seed=0)                     # 16 samples from the EMA generator, in [-1, 1] for images
    G = run.network("G")                             # any network of the system, in eval mode
    y = run.translate(images, "AtoB")                # image-to-image runs (pix2pix, cyclegan)

What :data:`ganforge.__all__` names is the public API; plugin authors also rely on
``ganforge.hookimpl``, the hook specifications (:mod:`ganforge.contract.hookspecs`) and the systems
contract (:mod:`ganforge.contract.system`), thin re-exports of :mod:`ganforge.contract`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ganforge.contract.recipes import load_recipe
from ganforge.recipe.load import apply_overrides, recipe_from_dict
from ganforge.recipe.types import Recipe
from ganforge.run.trained import Run, load_run
from ganforge.training.engine import train as run_training

__all__ = ["Recipe", "Run", "load_recipe", "load_run", "train"]


def train(recipe: str | Path | Recipe, overrides: list[str] | None = None, *, plugins: Any = None) -> Any:
    """Train ``recipe`` (a shipped recipe's name, a YAML path, or a :class:`Recipe`) with dotted
    ``overrides`` (``["train.steps=500"]``), as ``ganforge train`` does; returns the final
    training state (``state.step``, ``state.nets``, ``state.output_dir``, ...). ``plugins``: a
    :class:`ganforge.contract.manager.PluginManager` with parts registered by hand (default: every
    installed plugin)."""
    if isinstance(recipe, Recipe):
        recipe = recipe_from_dict(apply_overrides(recipe.to_dict(), list(overrides or [])))
    else:
        recipe = load_recipe(str(recipe), list(overrides or []))
    return run_training(recipe, plugins=plugins)
