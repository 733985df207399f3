"""The layout a newcomer relies on (the guide's "How the package is laid out"): sub-packages by
responsibility on floors that import only downwards, no import cycle anywhere (function-level
imports included), the recipe types as a leaf, the training loop in one short file, no
oversized module, and the documented plugin imports as thin re-exports of the real ones."""
import ast
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

#: Each sub-package's floor: a module imports from its own package, from lower floors and from
#: ganforge.errors only. The top level (the public API, the CLI and the documented re-exports)
#: is above every floor; the built-in plugins import the contract and are reached by name only.
FLOORS = {"errors": 0, "recipe": 1, "contract": 2, "observe": 3, "training": 4, "run": 5, "bench": 6, "tools": 6}
TOP = 7


def _modules():
    out = {}
    for base, package in ((REPO / "ganforge", "ganforge"), (REPO / "plugins", "ganforge.plugins")):
        for path in base.rglob("*.py"):
            rel = path.relative_to(base).with_suffix("")
            if "templates" in rel.parts or "ganforge-sngan" in rel.parts:  # (scaffold templates, a separate package)
                continue
            name = ".".join([package, *rel.parts])
            out[name.removesuffix(".__init__")] = path
    return out


def _imports(path, name, known):
    """Every ganforge module ``path`` imports, at any depth (function-level imports included),
    except under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text())
    hidden = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
              for n in ast.walk(node)}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    deps = set()
    for node in ast.walk(tree):
        if id(node) in hidden:
            continue
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            # "from ganforge.recipe import load" imports the submodule, not only the package
            for a in node.names:
                deps |= {f"{module}.{a.name}"} & known or {module} & known
        elif isinstance(node, ast.Import):
            deps |= {a.name for a in node.names} & known
    return deps - {name}


def _graph():
    modules = _modules()
    return {m: _imports(p, m, set(modules)) for m, p in modules.items()}


def test_no_import_cycle_at_any_depth():
    graph = _graph()
    state = {}

    def visit(m, stack):
        state[m] = "active"
        for d in sorted(graph[m]):
            assert state.get(d) != "active", "import cycle: " + " -> ".join(stack[stack.index(d):] + [d])
            if d not in state:
                visit(d, stack + [d])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    # the model plugins do not import the objectives plugin; the engine does not import the step back
    assert "ganforge.plugins.objectives" not in graph["ganforge.plugins.image.dcgan"] | graph["ganforge.plugins.image.infogan"]
    assert "ganforge.training.engine" not in graph["ganforge.training.step"]


def test_the_check_sees_function_level_imports_and_skips_type_checking(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ganforge.training import engine\n"
                      "def f():\n    from ganforge.recipe import load\n    import ganforge.errors\n")
    known = {"ganforge.training.engine", "ganforge.recipe.load", "ganforge.recipe", "ganforge.errors"}
    assert _imports(module, "ganforge.x.m", known) == {"ganforge.recipe.load", "ganforge.errors"}


def _floor(module):
    parts = module.split(".")
    if parts[1:2] == ["plugins"]:
        return None
    return FLOORS.get(parts[1], TOP) if len(parts) > 2 or parts[1:] == ["errors"] else TOP


def test_every_sub_package_imports_only_downwards():
    upward = []
    for m, deps in _graph().items():
        floor = _floor(m) if m != "ganforge" else TOP
        if floor is None or floor == TOP:
            continue
        for d in deps:
            if d == "ganforge":  # (the root: __version__)
                continue
            df = _floor(d)
            if df is not None and df > floor:
                upward.append(f"{m} -> {d}")
    assert not upward, upward


def test_the_core_imports_no_plugin():
    """The built-in plugins register exactly as a third-party package does: the core (every
    floor and the top level) reaches them through the plugin manager by name, never by import.
    What both read (image files, IDX files) is in ``ganforge.contract.formats``."""
    graph = _graph()
    reaching = sorted(f"{m} -> {d}" for m, deps in graph.items() if not m.startswith("ganforge.plugins")
                      for d in deps if d.startswith("ganforge.plugins"))
    assert not reaching, reaching
    assert "ganforge.data" in graph["ganforge.plugins.image.idx"] & graph["ganforge.plugins.image.image_folder"]
    # the helpers' older, documented paths still give the same objects
    import ganforge.data as data
    from ganforge.plugins.image import idx, image_folder

    assert idx.read_idx is data.read_idx and idx.find_idx_files is data.find_idx_files
    assert image_folder.open_image is data.open_image and image_folder.EXTENSIONS is data.IMAGE_EXTENSIONS


def test_the_recipe_types_are_a_leaf():
    """The types every part reads import nothing of ganforge but its errors; loading, validation
    and the plugin manager sit above them."""
    graph = _graph()
    assert graph["ganforge.recipe.types"] <= {"ganforge.errors"}
    assert "ganforge.contract.manager" not in {d for m, ds in graph.items() if m.startswith("ganforge.recipe.") for d in ds}
    for module in ("ganforge.training.optim", "ganforge.recipe.ramps", "ganforge.contract.state"):
        recipe_deps = {d for d in graph[module] if d.startswith("ganforge.recipe")}
        assert recipe_deps <= {"ganforge.recipe.types", "ganforge.recipe.ramps", "ganforge.recipe.schedule",
                               "ganforge.recipe.optimizers"}, (module, recipe_deps)


def test_no_comment_apologises_for_an_import():
    for path in _modules().values():
        text = path.read_text()
        assert "imports this module" not in text and "imports the recipe types" not in text, path


def test_folders_stay_small_enough_to_scan():
    """The guide: past ~25 files a folder is grouped by family."""
    for base in (REPO / "plugins", REPO / "ganforge"):
        for folder in [base, *(p for p in base.iterdir() if (p / "__init__.py").exists())]:
            assert len(list(folder.glob("*.py"))) <= 25, folder


def test_the_loop_reads_in_one_short_file_and_no_module_is_oversized():
    lengths = {str(p.relative_to(REPO)): len(p.read_text().splitlines()) for p in (REPO / "ganforge").rglob("*.py")}
    assert lengths["ganforge/training/engine.py"] <= 300, lengths["ganforge/training/engine.py"]
    assert max(lengths.values()) <= 400, {k: v for k, v in lengths.items() if v > 400}


@pytest.mark.parametrize("shim, home", [("ganforge.system", "ganforge.contract.system"),
                                        ("ganforge.hookspecs", "ganforge.contract.hookspecs"),
                                        ("ganforge.layers", "ganforge.contract.layers"),
                                        ("ganforge.data", "ganforge.contract.data"),
                                        ("ganforge.sampling", "ganforge.observe.sampling"),
                                        ("ganforge.config", "ganforge.recipe.types")])
def test_the_documented_imports_are_thin_re_exports(shim, home):
    """What the guide lets a plugin rely on keeps working from its documented module, as the
    same objects as where they now live, and the re-export holds nothing of its own."""
    shim_module, home_module = importlib.import_module(shim), importlib.import_module(home)
    assert shim_module.__all__
    for name in shim_module.__all__:
        homes = [home_module] + [importlib.import_module(m) for m in ("ganforge.contract.recipes", "ganforge.contract.formats")]
        source = next(h for h in homes if hasattr(h, name))
        assert getattr(shim_module, name) is getattr(source, name), name
    tree = ast.parse(Path(shim_module.__file__).read_text())
    assert all(isinstance(n, (ast.ImportFrom, ast.Assign)) or isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)
               for n in tree.body)


def test_the_public_api_and_the_plugin_marker():
    import ganforge
    from ganforge.contract.hookspecs import hookimpl
    from ganforge.contract.recipes import load_recipe
    from ganforge.recipe.types import Recipe
    from ganforge.run.trained import Run, load_run

    assert ganforge.hookimpl is hookimpl and ganforge.load_recipe is load_recipe and ganforge.Recipe is Recipe
    assert ganforge.Run is Run and ganforge.load_run is load_run
    assert all(hasattr(ganforge, name) for name in ganforge.__all__)
