"""What an objective's system is made of, for ``ganforge plugins --args OBJECTIVE`` and
``--json``: its networks (kind, the part that builds each by default, what the system passes
it), optimizers and phases, under the recipe keys that set them.

A system declares these in its constructor, often from its data (a vocoder's hop, a
translation's shapes), so the outline builds it with the recipe's defaults and a stand-in for
the data that holds only shapes and facts (an image of 1x32x32, else a speech segment of 8,192
samples), never data. A system that cannot be built that way has no outline; the listing says so.
"""
from __future__ import annotations

import warnings
from typing import Any

__all__ = ["network_users", "system_outline"]


def _stand_ins(name: str) -> list:
    """Data stand-ins with only the facts systems read (an export's kind: no items): an image,
    then a speech segment."""
    from ganforge.run.loading import ExportedData

    image = {"sample_shape": (1, 32, 32), "input_shape": (1, 32, 32), "paired": True, "num_classes": 10}
    speech = {**image, "sample_shape": (1, 8192), "input_shape": (1, 8192), "sample_rate": 22050, "hop": 256}
    return [ExportedData(facts, name) for facts in (image, speech)]


def system_outline(registry: Any, name: str) -> dict[str, Any] | None:
    """The outline of objective ``name`` (``None`` when its system cannot be built without data):
    ``networks``: {name: {kind, default, default_args, context, recipe_key}}, ``optimizers``:
    {name: {networks, lr, betas, weight_decay}}, ``phases``: [{name, optimizer, trainable,
    repeats, new_batch, penalize, start, stop, keeps}]."""
    from ganforge.recipe.types import Part, Recipe
    from ganforge.training.build import build_system

    for data in _stand_ins(name):
        recipe = Recipe(objective=Part(name))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                system = build_system(recipe, registry, data.sample_shape, data)
        except Exception:  # noqa: BLE001 - a system this stand-in does not suit: try the next
            continue
        return {
            "networks": {n: {"kind": spec.kind, "default": spec.default, "default_args": dict(spec.args),
                             "context": sorted(spec.context), "ema": spec.ema,
                             "recipe_key": f"networks.{n}" + ("" if spec.default or spec.kind not in (
                                 "generator", "discriminator") else f" (or {spec.kind}:)")}
                         for n, spec in system.networks.items()},
            "optimizers": {n: {"networks": list(o.networks), "lr": o.lr, "betas": list(o.betas),
                               "weight_decay": o.weight_decay, "recipe_key": f"optimizers.{n}"}
                           for n, o in system.optimizers.items()},
            "phases": [{"name": p.name, "optimizer": p.optimizer,
                        "trainable": list(p.trainable or system.optimizers[p.optimizer].networks),
                        "repeats": p.repeats, "new_batch": p.new_batch, "penalize": list(p.penalize),
                        "start": p.start, "stop": p.stop, "keeps": list(p.keeps), "recipe_key": f"phases.{p.name}"}
                       for p in system.phases],
        }
    return None


def network_users(registry: Any, outlines: dict[str, dict | None]) -> dict[str, list[tuple[str, str, list[str]]]]:
    """For each registered part, the systems' networks it builds by default: part name ->
    [(objective, network name, the keys the system passes it)]."""
    users: dict[str, list[tuple[str, str, list[str]]]] = {}
    for objective, outline in outlines.items():
        for net, spec in (outline or {}).get("networks", {}).items():
            if spec["default"]:
                users.setdefault(spec["default"], []).append((objective, net, spec["context"]))
    return users
