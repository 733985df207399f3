"""The layout a newcomer relies on: the training loop in one short file, no oversized module,
and no import cycle between ganforge's modules or its built-in plugins (top-level imports)."""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _modules():
    out = {}
    for folder, package in (("ganforge", "ganforge"), ("plugins", "ganforge.plugins"),
                            ("plugins/image", "ganforge.plugins.image"), ("plugins/translation", "ganforge.plugins.translation")):
        for path in (REPO / folder).glob("*.py"):
            out[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return out


def _imports(path, known):
    deps = set()
    for node in ast.parse(path.read_text()).body:  # top level only: function-level imports are lazy
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ganforge"):
            # "from ganforge import hookspecs" imports the submodule, not the package's __init__
            names = {f"{node.module}.{a.name}" for a in node.names} & known
            deps |= names or ({node.module} & known)
        elif isinstance(node, ast.Import):
            deps |= {a.name for a in node.names} & known
    return deps


def test_no_import_cycles():
    modules = _modules()
    graph = {m: _imports(p, set(modules)) - {m, "ganforge"} for m, p in modules.items()}
    state = {}

    def visit(m, stack):
        state[m] = "active"
        for d in graph[m]:
            assert state.get(d) != "active", "import cycle: " + " -> ".join(stack[stack.index(d):] + [d])
            if d not in state:
                visit(d, stack + [d])
        state[m] = "done"

    for m in graph:
        if m not in state:
            visit(m, [m])
    # the model plugins do not import the objectives plugin; the engine does not import the step back
    assert "ganforge.plugins.objectives" not in graph["ganforge.plugins.image.dcgan"] | graph["ganforge.plugins.image.infogan"]
    assert "ganforge.engine" not in graph["ganforge.step"]


def test_plugin_folders_stay_small_enough_to_scan():
    """The guide: past ~25 files a folder is grouped by family (image/, translation/, ...)."""
    for folder in [REPO / "plugins", *(p for p in (REPO / "plugins").iterdir() if (p / "__init__.py").exists())]:
        assert len(list(folder.glob("*.py"))) <= 25, folder


def test_the_loop_reads_in_one_short_file_and_no_module_is_oversized():
    lengths = {p.name: len(p.read_text().splitlines()) for p in (REPO / "ganforge").glob("*.py")}
    assert lengths["engine.py"] <= 300, lengths["engine.py"]
    assert max(lengths.values()) <= 400, {k: v for k, v in lengths.items() if v > 400}
