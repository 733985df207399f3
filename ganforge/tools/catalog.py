"""What is there to use: ``ganforge recipe list | show`` and ``ganforge plugins [--json]
[--args NAME]`` (the shipped and installed recipes, every registered part and its arguments)."""
from __future__ import annotations

import argparse
import json
import re
from typing import Any

from ganforge.errors import GanforgeError

__all__ = ["cmd_plugins", "cmd_recipe", "recipe_summary"]


def cmd_recipe(args: argparse.Namespace) -> int:
    """``recipe list``: the shipped recipes and what each is for; ``recipe show NAME``: the
    recipe with its bases resolved and the overrides applied, as YAML."""
    import yaml

    from ganforge.contract.recipes import find_recipe, load_recipe, plugin_recipes
    from ganforge.recipe.sources import shipped_recipes as _shipped_recipes

    if args.action == "list":
        import shutil
        import textwrap

        width = max(shutil.get_terminal_size((100, 24)).columns, 80)
        own = sorted(_shipped_recipes().glob("*.yaml"))
        shipped = [(p.stem, p, "") for p in own]
        shipped += [(name, path, f" [{info.distribution or info.name} {info.version or ''}]".replace(" ]", "]"))
                    for name, (path, info) in sorted(plugin_recipes().items())
                    if name not in {p.stem for p in own} and path.is_file()]
        for name, path, source in shipped:
            purpose, measured = recipe_summary(path.read_text())
            print(textwrap.fill(purpose + source, width, initial_indent=f"{name:<22} ", subsequent_indent=" " * 23))
            print(textwrap.fill(f"measured: {measured}", width, initial_indent=" " * 23,
                                subsequent_indent=" " * 33))
        return 0
    if not args.name:
        raise GanforgeError("ganforge recipe show needs a recipe name or path (ganforge recipe list shows them)")
    recipe = load_recipe(args.name, args.overrides)
    print(f"# {find_recipe(args.name)}, bases resolved{', with overrides' if args.overrides else ''}")
    print(yaml.safe_dump(recipe.to_dict(), sort_keys=False, default_flow_style=None).rstrip())
    return 0


def recipe_summary(text: str) -> tuple[str, str]:
    """A recipe file's first sentence and its ``# Measured:`` text (which may run over several
    comment lines), without the project's internal references (issue numbers, the source
    repository's benchmarks/RESULTS.md, which an installed package does not have)."""
    comments = [line[1:].strip() for line in text.splitlines() if line.startswith("#")]
    at = next((i for i, c in enumerate(comments) if c.startswith("Measured:")), None)
    about = " ".join(comments if at is None else comments[:at])
    measured = "not measured yet" if at is None else " ".join(comments[at:]).removeprefix("Measured:").strip()

    def clean(s: str) -> str:
        s = re.sub(r"\s*\((?:issue #\d+|(?:benchmarks/)?RESULTS\.md[^)]*)\)", "", s)  # internal references
        s = re.sub(r";\s*(?:benchmarks/)?RESULTS\.md[^;)]*", "", s)
        return re.sub(r"\s+([,.;:)])", r"\1", re.sub(r"\s{2,}", " ", s)).strip()

    first = re.match(r"(.+?(?<!\bal)(?<!e\.g)(?<!i\.e)\.)(?:\s+[A-Z0-9]|$)", clean(about))  # the first sentence
    return first.group(1) if first else clean(about), clean(measured)


def cmd_plugins(args: argparse.Namespace) -> int:
    from ganforge.contract.manager import get_plugin_manager, plural
    from ganforge.tools.outline import network_users, system_outline

    pm = get_plugin_manager()
    registry = pm.registry
    entries = registry.entries()
    if args.args:
        found = [e for e in entries if e.name == args.args]
        if not found:
            from ganforge.errors import did_you_mean

            names = sorted({e.name for e in entries})
            raise GanforgeError(f"no part is registered as '{args.args}'.{did_you_mean(args.args, names)} "
                                f"'ganforge plugins' lists them all")
    if not (args.args or args.json):
        return _listing(entries, pm.failed, plural)
    outlines = {e.name: system_outline(registry, e.name) for e in entries if e.kind == "objective"}
    users = network_users(registry, outlines)
    rows = [_row(e, outlines, users) for e in entries]
    if args.args:
        for e, row in zip(entries, rows, strict=True):
            if e.name == args.args:
                _print_part(e, row)
        return 0
    print(json.dumps({"parts": rows, "failed": pm.failed}, indent=1))
    return 0


def _listing(entries: list, failed: dict, plural: Any) -> int:
    width = max((len(e.name) for e in entries), default=4)
    kind = None
    for e in entries:
        if e.kind != kind:
            kind = e.kind
            print(f"\n{plural(kind)}:")
        source = f"{e.plugin.name} ({e.plugin.distribution or 'registered by hand'} {e.plugin.version or ''})".rstrip()
        print(f"  {e.name:<{width}}  {e.description}  [{source}]")
    for name, error in failed.items():
        print(f"\nFAILED plugin '{name}': {error}")
    return 0


# where a recipe sets each kind's arguments (networks of a system: networks.<name>.args)
WHERE = {"dataset": "data.args", "metric": "metrics: [{name, args}]", "penalty": "penalties: [{name, args}]",
         "loss": "loss.args", "objective": "objective.args", "augment": "augment.args",
         "generator": "generator.args", "discriminator": "discriminator.args"}


def _row(e: Any, outlines: dict, users: dict) -> dict[str, Any]:
    """A part as ``--json`` gives it: its arguments, each with ``set_by`` (``recipe``, ``ganforge``
    or the systems that pass it), and ``recipe_keys``: where a recipe sets them. An objective
    also has ``system``: its outline (:func:`ganforge.tools.outline.system_outline`)."""
    used_by = users.get(e.name, [])
    supplied: dict[str, list[str]] = {}
    for objective, net, context in used_by:
        for key in context:
            supplied.setdefault(key, []).append(f"objective {objective} (network {net})")
    args = []
    for a in e.arguments():
        set_by = "ganforge" if a["context"] else ", ".join(supplied[a["name"]]) if a["name"] in supplied else "recipe"
        if e.kind == "network" and not used_by and a["required"] and set_by == "recipe":
            set_by = "the system that uses it, usually (its Network context)"
        args.append({**a, "set_by": set_by, "context": set_by != "recipe"})
    keys = [f"networks.{net}.args (objective {objective})" for objective, net, _ in used_by]
    if e.kind in ("generator", "discriminator"):
        keys += [WHERE[e.kind], f"networks.<name>: {{name: {e.name}, args: ...}}"]
    elif e.kind in WHERE:
        keys.insert(0, WHERE[e.kind])
    if e.kind == "network" and not used_by:
        keys.append(f"networks.<name>: {{name: {e.name}, args: ...}}")
    row = {"kind": e.kind, "name": e.name, "description": e.description, "plugin": e.plugin.name,
           "distribution": e.plugin.distribution, "version": e.plugin.version, "args": args, "recipe_keys": keys}
    if e.kind == "objective":
        row["system"] = outlines.get(e.name)
    return row


def _print_part(e: Any, row: dict) -> None:
    """``ganforge plugins --args NAME``: the part's documentation, the arguments a recipe sets
    (with defaults) and where, those ganforge or a system supplies, and for an objective its
    system's networks, optimizers and phases."""
    import inspect

    doc = inspect.getdoc(e.factory) or e.description
    print(f"{e.kind} '{e.name}' [{e.provider}]")
    print("\n".join(f"    {line}" for line in doc.splitlines()) if doc else "    (no docstring)")
    settable = [a for a in row["args"] if a["set_by"] == "recipe"]
    print(f"  args (in a recipe: {'; or '.join(row['recipe_keys'])}):" if settable else "  args: none a recipe sets")
    for a in settable:
        print(f"    {a['name']}: {'required' if a['required'] else a['default']!r}")
    by: dict[str, list[str]] = {}
    for a in row["args"]:
        if a["set_by"] != "recipe":
            by.setdefault(a["set_by"], []).append(a["name"])
    for who, names in by.items():
        print(f"  given by {who}: {', '.join(names)}")
    if e.kind != "objective":
        return
    outline = row["system"]
    if outline is None:
        print("  its networks, optimizers and phases: not shown (the system could not be built without its data)")
        return
    nets, opts, phases = outline["networks"], outline["optimizers"], outline["phases"]
    width = max(len(n) for n in [*nets, *opts, *(p["name"] for p in phases)])
    print("  networks (networks.<name>: {name: PART, args: {...}}; without name: the default part's args):")
    for n, spec in nets.items():
        if spec["default"]:
            built = f"default {spec['default']}" + (f" {spec['default_args']}" if spec["default_args"] else "")
        else:
            built = f"from networks.{n}, else the recipe's {spec['kind']}: section"
        given = f"; the system passes {', '.join(spec['context'])}" if spec["context"] else ""
        print(f"    {n:<{width}}  {spec['kind']}: {built}{given}{'; EMA copy with train.ema' if spec['ema'] else ''}")
    print("  optimizers (optimizers.<name>: {lr, betas, weight_decay}; Adam):")
    for n, o in opts.items():
        decay = f", weight_decay {o['weight_decay']:g}" if o["weight_decay"] else ""
        betas = "(" + ", ".join(f"{b:.4g}" if isinstance(b, float) else str(b) for b in o["betas"]) + ")"
        print(f"    {n:<{width}}  over {', '.join(o['networks'])}; lr {o['lr']:.4g}, betas {betas}{decay}")
    print("  phases, in order each step (phases.<name>: {start, stop}):")
    for p in phases:
        when = "" if not p["start"] and p["stop"] is None else \
            f"; from step {p['start']}" + (f" to {p['stop']}" if p["stop"] is not None else "")
        parts = [f"steps optimizer {p['optimizer']}", f"trains {', '.join(p['trainable'])}",
                 *([f"x{p['repeats']} a step"] if p["repeats"] != 1 else []),
                 *(["on the previous phase's batch"] if not p["new_batch"] else []),
                 *([f"penalties on {', '.join(p['penalize'])}"] if p["penalize"] else []),
                 *([f"keeps {', '.join(p['keeps'])}'s output for the next phase"] if p["keeps"] else [])]
        print(f"    {p['name']:<{width}}  {'; '.join(parts)}{when}")
