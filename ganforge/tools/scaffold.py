"""``ganforge new-plugin NAME --kind KIND``: a ready plugin package to start from.

It writes ``ganforge-<name>/`` with ``pyproject.toml`` (the entry point in the ``ganforge``
group), ``ganforge_<name>.py`` (a small, documented, working part of that kind: the guide's
example for it, docs/writing-plugins.md "A minimal plugin of each kind"), a pytest file that
checks registration and trains two steps with the part (nothing installed), and a README. The
folder is written in full under a temporary name and then renamed: nothing half-written.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

from ganforge.errors import GanforgeError

__all__ = ["KINDS", "new_plugin", "template"]

TEMPLATES = Path(__file__).parent / "templates"
KINDS = ("generator", "discriminator", "network", "loss", "penalty", "objective", "dataset", "metric", "augment")
# how a recipe uses a part of each kind (also the generated test's overrides)
USAGE = {"generator": "generator={n}", "discriminator": "discriminator={n}", "network": "networks.E={{name: {n}}}",
         "loss": "loss={n}",
         "penalty": "penalties=[{{name: {n}, weight: 0.1}}]", "objective": "objective={n}",
         "dataset": "data.name={n}", "metric": "metrics=[{n}]", "augment": "augment={n}"}
# what the generated test adds to train with it (an augmentation needs images)
TEST_EXTRA = {"augment": ["data.name=toy_blobs"],
              "network": ["data.name=toy_blobs", "objective=vqgan", "generator={name: mlp}", "discriminator={name: mlp}",
                          "objective.args.code_dim=4", "metrics=[]",
                          "networks.G.args={width: 8}", "networks.D.args={ndf: 8, n_layers: 1}", "log.n_samples=8"]}


def template(kind: str) -> str:
    """The example module for ``kind`` (its part is registered as ``my_<kind>``)."""
    return (TEMPLATES / f"{kind}.py").read_text()


def new_plugin(name: str, kind: str, where: Path) -> Path:
    """Write the package for a ``kind`` part called ``name`` into ``where``; returns its folder."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise GanforgeError(f"plugin name '{name}' must be lower-case letters, digits and _ (a Python module "
                            f"name), starting with a letter, e.g. my_moons")
    if kind not in KINDS:
        raise GanforgeError(f"--kind {kind} is not a kind of part; kinds: {', '.join(KINDS)}")
    dist = f"ganforge-{name.replace('_', '-')}"
    folder = where / dist
    if folder.exists():
        raise GanforgeError(f"{folder} already exists; choose another name or --dir")
    usage = USAGE[kind].format(n=name)
    files = {
        f"ganforge_{name}.py": template(kind).replace(f"my_{kind}", name),
        f"test_ganforge_{name}.py": (TEMPLATES / "plugin_test.py").read_text()
        .replace("my_overrides", repr([usage, *TEST_EXTRA.get(kind, [])])).replace("my_kind", kind).replace("my_part", name),
        "pyproject.toml": (TEMPLATES / "pyproject.toml.txt").read_text()
        .replace("my-dist", name.replace("_", "-")).replace("my_part", name).replace("my_kind", kind),
        "README.md": (TEMPLATES / "README.md.txt").read_text().replace("my-dist", name.replace("_", "-"))
        .replace("my_part", name).replace("my_kind", kind).replace("my_usage", f"`{usage}`"),
    }
    tmp = where / f".{dist}.tmp"
    try:
        tmp.mkdir(parents=True)
        for file, text in files.items():
            (tmp / file).write_text(text)
        tmp.rename(folder)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise GanforgeError(f"cannot write {folder}: {err.strerror or err}") from None
    return folder
