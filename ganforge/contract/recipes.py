"""Recipes with the installed plugins' own: finding and loading a recipe by name also looks
among the recipes plugin packages ship (``ganforge_register_recipes``). Recipe loading itself
(:mod:`ganforge.recipe.load`) sits below the plugin manager and is handed them from here."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ganforge.contract.manager import get_plugin_manager
from ganforge.recipe import load, sources
from ganforge.recipe.types import Recipe

__all__ = ["find_recipe", "load_recipe", "plugin_recipes"]


def plugin_recipes() -> dict[str, tuple[Path, Any]]:
    """Recipes registered by installed plugin packages: name -> (path, plugin info)."""
    return get_plugin_manager().recipes()


def find_recipe(name_or_path: str) -> Path:
    """A recipe path, or a bare name in ./recipes, ganforge's own recipes, then the plugins'."""
    return sources.find_recipe(name_or_path, plugin_recipes)


def load_recipe(name_or_path: str | None = None, overrides: list[str] | None = None,
                data: dict[str, Any] | None = None) -> Recipe:
    """Load a recipe from a file, a name (plugin recipes included) or a dict, and apply dotted
    overrides (:func:`ganforge.recipe.load.load_recipe`)."""
    return load.load_recipe(name_or_path, overrides, data, plugin_recipes=plugin_recipes)
