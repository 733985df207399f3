"""Loading a recipe: a file (with its ``base`` chain, :mod:`ganforge.recipe.inherit`) or a
mapping, dotted command-line overrides, typed conversion and validation.

Every key is checked: an unknown key is refused with a did-you-mean, a value of the wrong type is
refused with the expected type. Command-line overrides use dotted keys (``train.steps=500``);
values are parsed as YAML (``log.wandb=true``, ``optim.betas=[0.0,0.99]``).

Recipes that installed plugin packages ship are found through ``plugin_recipes``, which the
caller passes (:mod:`ganforge.contract.recipes` passes the plugin manager's): loading sits
below the plugin manager.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Union

import yaml

from ganforge.errors import ConfigError, did_you_mean
from ganforge.recipe.inherit import resolve
from ganforge.recipe.sources import find_recipe, read_recipe_file
from ganforge.recipe.types import Recipe
from ganforge.recipe.validate import validate
from ganforge.recipe.yamlfile import load_yaml as _yaml

__all__ = ["apply_overrides", "load_recipe", "parse_override", "recipe_from_dict"]


# ------------------------------------------------------------------------------ conversion
def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        return origin.__name__
    if tp is type(None):
        return "null"
    return "a mapping" if dataclasses.is_dataclass(tp) else getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        errors = {}
        for option in typing.get_args(tp):
            try:
                return _convert(value, option, where)
            except ConfigError as err:
                errors[option] = err
        sections = [o for o in errors if dataclasses.is_dataclass(o)]
        if isinstance(value, dict) and len(sections) == 1:  # a section's own error (an unknown key) says more
            raise errors[sections[0]]
        raise _type_error(value, tp, where)
    if tp is type(None):
        if value is None:
            return None
        raise _type_error(value, tp, where)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, str) and "name" in {f.name for f in dataclasses.fields(tp)}:
            value = {"name": value}  # "loss: hinge" shorthand
        if not isinstance(value, dict):
            raise _type_error(value, tp, where)
        return _from_dict(tp, value, where)
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise _type_error(value, tp, where)
        return [_convert(v, item, f"{where}.{i}") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _type_error(value, tp, where)
        _, item = typing.get_args(tp)
        return {str(k): _convert(v, item, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _type_error(value, tp, where)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _type_error(value, tp, where)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _type_error(value, tp, where)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _type_error(value, tp, where)
    raise TypeError(f"unsupported config type {tp!r} at {where}")  # a bug in ganforge


def _type_error(value: Any, tp: Any, where: str) -> ConfigError:
    return ConfigError(
        f"Recipe key '{where}' must be {_type_name(tp)}, got {type(value).__name__} {value!r}"
    )


def _elsewhere(key: str, where: str) -> str | None:
    """Where ``key`` is a recipe key when it is not one of section ``where`` (``train.batch_size``
    is ``data.batch_size``): another top-level section's key, or a top-level key."""
    hints = typing.get_type_hints(Recipe)
    if where not in ("data", "optim", "train", "log", ""):  # (a part's or a list entry's keys: no guess)
        return None
    if where and key in hints and not dataclasses.is_dataclass(hints[key]):
        return key
    for section, tp in hints.items():
        if section != where and dataclasses.is_dataclass(tp) and key in {f.name for f in dataclasses.fields(tp)}:
            return f"{section}.{key}"
    return None


def _from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in hints:
            section = f"'{where}'" if where else "the recipe"
            other = _elsewhere(str(key), where)
            hint = f" It is {other}: set that instead." if other else did_you_mean(str(key), names)
            raise ConfigError(f"Unknown recipe key '{path}'.{hint} Keys of {section}: {', '.join(names)}")
        kwargs[key] = _convert(value, hints[key], path)
    return cls(**kwargs)


# ------------------------------------------------------------------------------ public API
def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.steps=500"`` -> (["train", "steps"], 500)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"Override '{text}' must look like key.sub=value (e.g. train.steps=500)")
    try:
        value = _yaml(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"Override '{text}': value is not valid YAML ({err})") from None
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        keys, value = parse_override(text)
        node: Any = data
        for i, key in enumerate(keys[:-1]):
            if isinstance(node, list) and not (key.isdigit() and int(key) < len(node)):
                raise ConfigError(f"Override '{text}': '{'.'.join(keys[:i])}' has {len(node)} entries "
                                  f"(indices 0 to {len(node) - 1}); set the whole list instead")
            nxt = node[int(key)] if isinstance(node, list) else node.get(key)
            if isinstance(nxt, str) and keys[i + 1] in ("name", "args"):
                nxt = {"name": nxt}  # expand the "loss: hinge" shorthand to edit it
            if nxt is None:
                nxt = {}
            if isinstance(node, list):
                node[int(key)] = nxt
            else:
                node[key] = nxt
            node = nxt
            if not isinstance(node, (dict, list)):
                raise ConfigError(f"Override '{text}': '{'.'.join(keys[: i + 1])}' is not a section")
        try:
            if isinstance(node, list):
                node[int(keys[-1])] = value
            else:
                node[keys[-1]] = value
        except (IndexError, ValueError):
            raise ConfigError(f"Override '{text}': '{'.'.join(keys[:-1])}' has {len(node)} entries "
                              f"(indices 0 to {len(node) - 1}); set the whole list instead") from None
    return data


def load_recipe(name_or_path: str | None = None, overrides: list[str] | None = None,
                data: dict[str, Any] | None = None, *,
                plugin_recipes: Callable[[], dict[str, tuple[Path, Any]]] | None = None) -> Recipe:
    """Load a recipe from a file (or a dict) and apply dotted overrides. ``plugin_recipes``
    gives the recipes installed plugin packages ship (name -> (path, plugin)), asked only when a
    name is not a file, in ./recipes or among ganforge's own."""
    raw: dict[str, Any] = {}
    if name_or_path is not None:
        def find(name: str) -> Path:
            return find_recipe(name, plugin_recipes)

        path = find(name_or_path)
        raw = resolve(read_recipe_file(path), path, read_recipe_file, find)
    if data:
        raw.update(data)
    raw = _default_parts(apply_overrides(raw, list(overrides or [])))
    recipe = _from_dict(Recipe, raw)
    validate(recipe)
    return recipe


def _default_parts(raw: dict[str, Any]) -> dict[str, Any]:
    """A part section that sets arguments without a name (``generator.args.hidden=[32]`` on a
    recipe that names no generator) is the default part's: its name filled in, as ``recipe
    show`` displays it."""
    defaults = Recipe()
    for key in ("generator", "discriminator", "loss", "objective"):
        section = raw.get(key)
        if isinstance(section, dict) and not section.get("name"):
            raw[key] = {**section, "name": getattr(defaults, key).name}
    return raw


def recipe_from_dict(data: dict[str, Any]) -> Recipe:
    recipe = _from_dict(Recipe, data)
    validate(recipe)
    return recipe
