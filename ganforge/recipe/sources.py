"""Where recipes come from: a path, ``./recipes``, ganforge's own recipes (``recipes/`` of the
source tree, installed as ``ganforge.recipes``), and the recipes installed plugin packages ship
(``ganforge_register_recipes``, passed in by the caller); reading one file."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ganforge.errors import ConfigError, did_you_mean
from ganforge.recipe.yamlfile import load_yaml as _yaml

__all__ = ["find_recipe", "read_recipe_file", "shipped_recipes"]


def shipped_recipes() -> Path:
    """ganforge's own recipes: ``recipes/`` of the source tree, installed as ``ganforge.recipes``."""
    try:
        import ganforge.recipes as shipped

        return Path(next(iter(shipped.__path__)))
    except (ImportError, StopIteration):  # pragma: no cover - an unusual install
        return Path(__file__).resolve().parents[2] / "recipes"


def find_recipe(name_or_path: str, plugin_recipes: Callable[[], dict[str, tuple[Path, Any]]] | None = None) -> Path:
    """A recipe path, or a bare name looked up in ./recipes, in ganforge's own recipes, then
    among those installed plugin packages ship (``plugin_recipes()``: name -> (path, plugin);
    :mod:`ganforge.contract.recipes` passes the plugin manager's)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    here = shipped_recipes()
    candidates = [Path("recipes") / f"{name_or_path}.yaml", here / f"{name_or_path}.yaml"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    plugins = plugin_recipes() if plugin_recipes is not None else {}  # recipes plugin packages ship
    if name_or_path in plugins and plugins[name_or_path][0].is_file():
        return plugins[name_or_path][0]
    known = sorted({p.stem for d in (Path("recipes"), here) if d.is_dir() for p in d.glob("*.yaml")} | set(plugins))
    raise ConfigError(
        f"Recipe '{name_or_path}' not found (looked at {path} and "
        f"{', '.join(str(c) for c in candidates)}). Known recipes: {', '.join(known) or 'none'}."
        f"{did_you_mean(path.stem, known)}"
    )


def read_recipe_file(path: Path) -> dict[str, Any]:
    """A recipe file's mapping (its ``base``, if any, not yet resolved)."""
    try:
        raw = _yaml(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"Recipe {path} is not valid YAML: {err}") from None
    if raw is None:
        raise ConfigError(f"Recipe {path} is empty; a recipe holds at least the keys that differ from the "
                          f"defaults (e.g. data: {{name: toy_grid}})")
    if not isinstance(raw, dict):
        raise ConfigError(f"Recipe {path} must be a mapping of keys, got {type(raw).__name__}")
    return raw
