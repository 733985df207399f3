"""Recipe inheritance: a recipe may say ``base: NAME_OR_PATH`` and hold only what differs.

    base: mnist_dcgan_r1          # a shipped recipe's name, or a path (relative to this file)
    name: mnist_dcgan_r1_hinge
    loss: hinge
    train: {steps: 8000}          # other train keys come from the base

The base is resolved first (it may have a base of its own), then this recipe is laid over it:
sections (mappings) merge key by key, everything else (numbers, strings, lists such as
``penalties`` or ``metrics``) is replaced whole. A part whose ``name`` changes (``generator:
{name: mlp}`` over a dcgan base, or another dataset) is a different part: the base's ``args``
for it are not inherited (its other keys, such as ``data.root``, are). A recipe
without ``name`` is named after its file. Command-line overrides apply last.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ganforge.errors import ConfigError

__all__ = ["merge", "resolve"]


def _part(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


def merge(base: Any, child: Any) -> Any:
    """``child`` laid over ``base`` (see the module docstring)."""
    if isinstance(child, dict) and isinstance(base, str):  # (a shorthand part, "loss: bce", in the base)
        base = _part(base)
    if not (isinstance(child, dict) and isinstance(base, dict)):
        return child
    out = dict(base)
    if "name" in child and "name" in base and child["name"] != base["name"]:
        out.pop("args", None)  # another part (or dataset): the base's args were for the other one
    for key, value in child.items():
        out[key] = merge(base[key], value) if key in base else value
    return out


def resolve(raw: dict[str, Any], path: Path, load: Any, find: Any, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """``raw`` (read from ``path``) with its ``base`` chain resolved. ``load(path)`` reads a
    recipe file's mapping; ``find(name)`` finds a shipped recipe by name."""
    chain = (*chain, path.resolve())
    raw = dict(raw)
    raw.setdefault("name", path.stem)
    base_ref = raw.pop("base", None)
    if base_ref is None:
        return raw
    if not isinstance(base_ref, str) or not base_ref:
        raise ConfigError(f"recipe {path}: base must be a recipe name or path, got {base_ref!r}")
    local = (path.parent / base_ref) if not Path(base_ref).is_absolute() else Path(base_ref)
    candidates = [local, local.with_suffix(".yaml")] if local.suffix != ".yaml" else [local]
    base_path = next((c for c in candidates if c.is_file()), None)
    if base_path is None:
        try:
            base_path = find(base_ref)
        except ConfigError as err:
            raise ConfigError(f"recipe {path}: base '{base_ref}' not found. {err}") from None
    if base_path.resolve() in chain:
        names = " -> ".join(p.stem for p in (*chain, base_path.resolve()))
        raise ConfigError(f"recipe {path}: its bases form a cycle ({names}); remove one of the base keys")
    base = resolve(load(base_path), base_path, load, find, chain)
    return merge(base, raw)
