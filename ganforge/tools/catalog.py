"""What is there to use: ``ganforge recipe list | show`` and ``ganforge plugins [--json]
[--args NAME]`` (the shipped and installed recipes, every registered part and its arguments)."""
from __future__ import annotations

import argparse
import json
import re

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

    pm = get_plugin_manager()
    entries = pm.registry.entries()
    rows = [{
        "kind": e.kind, "name": e.name, "description": e.description, "plugin": e.plugin.name,
        "distribution": e.plugin.distribution, "version": e.plugin.version, "args": e.arguments(),
    } for e in entries]
    if args.args:
        return _part_arguments(args.args, [e for e in entries if e.name == args.args], entries)
    if args.json:
        print(json.dumps({"parts": rows, "failed": pm.failed}, indent=1))
        return 0
    width = max((len(r["name"]) for r in rows), default=4)
    kind = None
    for r in rows:
        if r["kind"] != kind:
            kind = r["kind"]
            print(f"\n{plural(kind)}:")
        source = f"{r['plugin']} ({r['distribution'] or 'registered by hand'} {r['version'] or ''})".rstrip()
        print(f"  {r['name']:<{width}}  {r['description']}  [{source}]")
    for name, error in pm.failed.items():
        print(f"\nFAILED plugin '{name}': {error}")
    return 0


def _part_arguments(name: str, found: list, entries: list) -> int:
    """``ganforge plugins --args NAME``: each part of that name, its documentation and the
    arguments a recipe may set under its ``args`` (with defaults), then those ganforge supplies."""
    import inspect

    from ganforge.errors import did_you_mean

    if not found:
        names = sorted({e.name for e in entries})
        raise GanforgeError(f"no part is registered as '{name}'.{did_you_mean(name, names)} "
                            f"'ganforge plugins' lists them all")
    for e in found:
        doc = inspect.getdoc(e.factory) or e.description
        print(f"{e.kind} '{e.name}' [{e.provider}]")
        print("\n".join(f"    {line}" for line in doc.splitlines()) if doc else "    (no docstring)")
        settable = [a for a in e.arguments() if not a["context"]]
        where = {"dataset": "data.args", "metric": "metrics: [{name, args}]", "penalty": "penalties: [{name, args}]",
                 }.get(e.kind, f"{e.kind}.args")
        print(f"  args (in a recipe: {where}):" if settable else "  args: none")
        for a in settable:
            print(f"    {a['name']}: {'required' if a['required'] else a['default']!r}")
        context = [a["name"] for a in e.arguments() if a["context"]]
        if context:
            print(f"  set by ganforge: {', '.join(context)}")
    return 0
