"""The plugin contract: entry points, isolation, names, hooks."""
import importlib.metadata
import json
import re
import types

import pytest
import torch

import ganforge
from ganforge.contract.recipes import load_recipe
from ganforge.training.engine import train
from ganforge.errors import ConfigError, PluginError, UnknownNameError
from ganforge.contract.manager import PluginManager, PluginWarning, builtin_plugins, iter_hook_names


def test_builtins_come_through_entry_points():
    """Every plugin module under plugins/ (a file with a hookimpl) is registered through an entry
    point of the ganforge distribution, and nothing else is."""
    import pathlib

    eps = {ep.name: ep for ep in importlib.metadata.entry_points(group="ganforge")}
    folder = pathlib.Path(ganforge.__file__).resolve().parent.parent / "plugins"
    on_disk = {"ganforge.plugins." + ".".join(p.relative_to(folder).with_suffix("").parts)
               for p in folder.rglob("*.py") if "@hookimpl" in p.read_text() and "ganforge-sngan" not in p.parts}
    assert on_disk and set(builtin_plugins().values()) == on_disk  # (the families' sub-folders included)
    for name, module in builtin_plugins().items():
        assert eps[name].value == module
        assert eps[name].dist.metadata["Name"] == "ganforge"
    pm = PluginManager(autoload=True)
    entry = pm.registry.get("generator", "mlp")
    assert entry.plugin.distribution == "ganforge"
    assert entry.plugin.version == importlib.metadata.version("ganforge")


def test_registering_an_installed_plugin_again_by_hand_says_how_to_avoid_it():
    """A plugin's tests that register it by hand after it was pip-installed: one line that names
    the distribution it came from and the check to make, not pluggy's bare ValueError."""
    pm = PluginManager()
    with pytest.raises(PluginError) as err:
        pm.register(types.ModuleType("losses"), name="losses")  # a built-in plugin's entry-point name
    assert "a plugin named 'losses' is already registered (from ganforge)" in str(err.value)
    assert "'losses' not in pm.plugin_names()" in str(err.value) and "\n" not in str(err.value)


def test_autoload_off_without_builtins_registry_is_empty(monkeypatch):
    monkeypatch.setenv("GANFORGE_DISABLE_PLUGIN_AUTOLOAD", "1")
    bare = PluginManager(builtins=False)
    assert bare.autoload is False
    assert bare.registry.entries() == []
    with pytest.raises(UnknownNameError, match="Registered generators: none"):
        bare.registry.get("generator", "mlp")
    # autoload off, built-ins registered by hand: they are back, third-party ones are not
    by_hand = PluginManager()
    assert by_hand.registry.get("loss", "bce").plugin.name == "losses"
    assert set(by_hand.plugin_names()) == set(builtin_plugins())


def test_disable_plugins_by_name(monkeypatch):
    monkeypatch.setenv("GANFORGE_DISABLE_PLUGINS", "dcgan, toy")
    pm = PluginManager()
    assert "dcgan" not in pm.registry.names("generator")
    assert "toy_grid" not in pm.registry.names("dataset")
    assert "mlp" in pm.registry.names("generator")


def test_unknown_name_lists_known_and_suggests():
    pm = PluginManager()
    with pytest.raises(UnknownNameError) as err:
        pm.registry.get("loss", "hinje")
    msg = str(err.value)
    assert "Unknown loss 'hinje'" in msg and "Registered losses: bce, hinge, lsgan, minimax, relativistic, rpgan, wgan" in msg
    assert "Did you mean 'hinge'?" in msg


class _PluginPart:
    """A plugin object adding a generator, a loss and a dataset."""

    calls: list = []

    @ganforge.hookimpl
    def ganforge_register_generators(self, register):
        def line_generator(*, z_dim, out_shape, scale: float = 1.0):
            """A linear generator."""
            _PluginPart.calls.append(("generator", scale))
            return torch.nn.Sequential(torch.nn.Linear(z_dim, out_shape[0]))
        register("linear_test", line_generator)

    @ganforge.hookimpl
    def ganforge_register_losses(self, register):
        from ganforge.plugins.losses import BCE

        class CountingBCE(BCE):
            def d_loss(self, real, fake):
                _PluginPart.calls.append("d_loss")
                return super().d_loss(real, fake)
        register("counting_bce", CountingBCE, description="BCE that counts its calls")

    @ganforge.hookimpl
    def ganforge_register_datasets(self, register):
        def line_data(*, n: int = 512):
            from ganforge.contract.data import TensorDataset
            _PluginPart.calls.append("dataset")
            x = torch.linspace(-1, 1, n).unsqueeze(1).repeat(1, 2)
            return TensorDataset(x)
        register("line_test", line_data)


def test_plugin_object_adds_generator_loss_dataset_and_a_run_uses_them(tmp_path):
    pm = PluginManager()
    name = pm.register(_PluginPart(), name="test-parts")
    try:
        _PluginPart.calls.clear()
        entry = pm.registry.get("loss", "counting_bce")
        assert entry.description == "BCE that counts its calls" and entry.plugin.name == "test-parts"
        recipe = load_recipe("toy_grid", [
            f"out_dir={tmp_path}", "data.name=line_test", "data.args={n: 256}", "data.batch_size=32",
            "generator.name=linear_test", "generator.args={scale: 2.0}", "loss=counting_bce",
            "penalties=[]", "metrics=[]", "train.steps=5", "log.every=1", "log.progress=false",
        ])
        state = train(recipe, plugins=pm)
        assert state.step == 5
        assert ("generator", 2.0) in _PluginPart.calls and "dataset" in _PluginPart.calls
        assert _PluginPart.calls.count("d_loss") == 5
    finally:
        pm.unregister(name)
    assert "linear_test" not in pm.registry.names("generator")


class _MorePartsPlugin:
    """A plugin object adding a discriminator, a penalty, an objective and a metric."""

    calls: list = []

    @ganforge.hookimpl
    def ganforge_register_discriminators(self, register):
        def tiny_d(*, in_shape):
            return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(in_shape[0], 1))
        register("tiny_d", tiny_d)

    @ganforge.hookimpl
    def ganforge_register_penalties(self, register):
        def zero_penalty():
            def penalty(D, real, fake):
                _MorePartsPlugin.calls.append("penalty")
                return D(real).sum() * 0.0
            return penalty
        register("zero", zero_penalty)

    @ganforge.hookimpl
    def ganforge_register_objectives(self, register):
        from ganforge.plugins.objectives import Unconditional

        class Counting(Unconditional):
            def g_loss(self, batch):
                _MorePartsPlugin.calls.append("g_loss")
                return super().g_loss(batch)
        register("counting", lambda *, loss, z_dim, sample_shape, n_critic, optim:
                 Counting(loss, z_dim, sample_shape, n_critic, optim))

    @ganforge.hookimpl
    def ganforge_register_metrics(self, register):
        def mean_norm(*, dataset):
            return lambda samples, ds: {"norm": float(samples.norm(dim=1).mean())}
        register("mean_norm", mean_norm)


def test_plugin_object_adds_discriminator_penalty_objective_metric(tmp_path):
    pm = PluginManager()
    pm.register(_MorePartsPlugin(), name="more-parts")
    _MorePartsPlugin.calls.clear()
    recipe = load_recipe("toy_grid", [
        f"out_dir={tmp_path}", "discriminator=tiny_d", "objective=counting",
        "penalties=[{name: zero, every: 2}]", "metrics=[mean_norm]", "train.steps=6",
        "log.progress=false", "train.n_critic=2",
    ])
    state = train(recipe, plugins=pm)
    assert _MorePartsPlugin.calls.count("g_loss") == 6
    assert _MorePartsPlugin.calls.count("penalty") == 6  # 12 D steps, every 2nd
    assert state.metrics["mean_norm/norm"] > 0


def test_duplicate_name_names_both_providers():
    class Dup:
        @ganforge.hookimpl
        def ganforge_register_losses(self, register):
            register("hinge", lambda: None)

    pm = PluginManager()
    pm.register(Dup(), name="dup-plugin")
    with pytest.raises(PluginError) as err:
        _ = pm.registry  # the registry is built (and the clash found) on first use
    msg = str(err.value)
    assert "loss 'hinge' is registered twice" in msg
    assert re.search(r"plugin 'losses' \(ganforge [0-9.]+\)", msg) and "plugin 'dup-plugin'" in msg
    assert msg.endswith("GANFORGE_DISABLE_PLUGINS=dup-plugin")  # never advises disabling a built-in


def test_misspelled_hook_fails_that_plugin_only():
    class Typo:
        @ganforge.hookimpl
        def ganforge_register_loses(self, register):
            pass

    pm = PluginManager()
    with pytest.warns(PluginWarning, match="'typo' failed to load.*ganforge_register_loses"):
        pm.register(Typo(), name="typo")
    assert "typo" in pm.failed and "typo" not in pm.plugin_names()
    assert "bce" in pm.registry.names("loss")


def test_plugin_failing_on_import_is_isolated(monkeypatch):
    class FakeDist:
        metadata = {"Name": "ganforge-broken"}
        version = "0.0.1"

    class BrokenEntryPoint:
        name, value, group, dist = "broken", "ganforge_broken_mod", "ganforge", FakeDist()

        def load(self):
            raise ImportError("No module named 'ganforge_broken_mod'")

    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda **kw: list(real(**kw)) + [BrokenEntryPoint()])
    with pytest.warns(PluginWarning, match="plugin 'broken' failed to load: ImportError"):
        pm = PluginManager()
    assert "bce" in pm.registry.names("loss")
    with pytest.raises(UnknownNameError, match=r"failed to load and may have provided it: 'broken' \(ImportError"):
        pm.registry.get("generator", "sngan")


def test_api_version_mismatch_is_refused():
    mod = types.ModuleType("future_plugin")
    mod.GANFORGE_PLUGIN_API = ganforge.PLUGIN_API_VERSION + 1
    with pytest.raises(PluginError, match="written for ganforge plugin API 3, but this ganforge provides API 2"):
        PluginManager().register(mod, name="future")


def test_factory_argument_errors():
    reg = PluginManager().registry
    with pytest.raises(ConfigError, match=r"generator 'mlp' has no argument 'hiden'.*Did you mean 'hidden'"):
        reg.build("generator", "mlp", {"hiden": [3]}, z_dim=2, out_shape=(2,))
    with pytest.raises(ConfigError, match="argument 'z_dim' is set by ganforge"):
        reg.build("generator", "mlp", {"z_dim": 3}, z_dim=2, out_shape=(2,))


def test_lifecycle_hooks_fire_in_order(tmp_path):
    events = []

    class Recorder:
        @ganforge.hookimpl
        def ganforge_train_start(self, state):
            events.append(("start", state.step))

        @ganforge.hookimpl
        def ganforge_step_end(self, state, logs):
            events.append(("step", state.step, sorted(logs)))

        @ganforge.hookimpl
        def ganforge_checkpoint_saved(self, state, path):
            events.append(("checkpoint", state.step, path))

        @ganforge.hookimpl
        def ganforge_train_end(self, state):
            events.append(("end", state.step))

    pm = PluginManager()
    pm.register(Recorder(), name="recorder")
    recipe = load_recipe("toy_grid", [f"out_dir={tmp_path}", "train.steps=4", "log.every=2",
                                      "log.checkpoint_every=2", "log.progress=false", "metrics=[]"])
    train(recipe, plugins=pm)
    assert events[0] == ("start", 0)
    steps = [e for e in events if e[0] == "step"]
    assert [e[1] for e in steps] == [1, 2, 3, 4]
    assert steps[0][2] == [] and "loss_d" in steps[1][2] and "d_real" in steps[1][2]
    ckpts = [e for e in events if e[0] == "checkpoint"]
    assert [e[1] for e in ckpts] == [2, 4] and ckpts[-1][2].endswith("step-00000004")
    assert events[-1] == ("end", 4)


def test_every_hook_in_the_spec_is_called(tmp_path):
    """A plugin implementing every hook of the spec module (whatever it holds today) sees each
    one called by a short run with a checkpoint and a recipe lookup (the recipes a package
    ships): no hook is declared and never called."""
    called = set()

    class Everything:
        pass

    for name in iter_hook_names():
        def impl(_name=name, **kwargs):  # (pluggy passes no arguments to **kwargs)
            called.add(_name)
        setattr(Everything, name, staticmethod(ganforge.hookimpl(impl)))
    pm = PluginManager()
    pm.register(Everything(), name="everything")
    train(load_recipe("toy_grid", [f"out_dir={tmp_path}", "train.steps=2", "log.checkpoint_every=1",
                                   "log.progress=false", "metrics=[]"]), plugins=pm)
    assert pm.recipes() == {}  # (what `ganforge train NAME` asks when NAME is not ganforge's own)
    assert called == set(iter_hook_names()) and len(called) >= 13


def test_a_plugin_whose_registration_hook_raises_is_isolated():
    class Bad:
        @ganforge.hookimpl
        def ganforge_register_losses(self, register):
            register("bad_loss", lambda: None)
            raise RuntimeError("my bug")

    pm = PluginManager()
    pm.register(Bad(), name="bad")
    with pytest.warns(PluginWarning, match="'bad' failed to load: RuntimeError in ganforge_register_losses: my bug"):
        registry = pm.registry
    assert "bce" in registry.names("loss") and "bad_loss" not in registry.names("loss")
    assert "bad" in pm.failed and "bad" not in pm.plugin_names()
    with pytest.raises(UnknownNameError, match=r"failed to load and may have provided it: 'bad' \(RuntimeError"):
        registry.get("loss", "bad_loss")


def test_a_plugin_calling_sys_exit_at_import_is_isolated(monkeypatch):
    class ExitingEntryPoint:
        name, value, group, dist = "exits", "ganforge_exits_mod", "ganforge", None

        def load(self):
            raise SystemExit(3)

    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **kw: list(real(**kw)) + [ExitingEntryPoint()])
    with pytest.warns(PluginWarning, match="plugin 'exits' failed to load: SystemExit: 3"):
        pm = PluginManager()
    assert "bce" in pm.registry.names("loss")


def test_a_dataset_factory_gets_root_and_download_only_if_it_takes_them():
    """The guide's dataset contract: ganforge's context (root, download) reaches a factory only
    where its signature has it, so a generated dataset need not accept a root."""
    pm = PluginManager()
    seen = {}

    class Datasets:
        @ganforge.hookimpl
        def ganforge_register_datasets(self, register):
            register("generated", lambda *, n=4: seen.setdefault("generated", n))
            register("from_files", lambda *, root=None, download=False: seen.setdefault("from_files", (root, download)))

    pm.register(Datasets(), name="datasets_here")
    pm.registry.build("dataset", "generated", {"n": 3}, root="/data", download=False)
    pm.registry.build("dataset", "from_files", {}, root="/data", download=True)
    assert seen == {"generated": 3, "from_files": ("/data", True)}


def test_plugins_args_shows_a_parts_documentation_and_arguments(run_cli):
    """What the BiGAN author had to dig out of `recipe show`: a part's arguments with their
    defaults, which ones a recipe sets and which ganforge supplies (also in --json)."""
    code, out, _ = run_cli("plugins", "--args", "mlp")
    assert code == 0
    gen = out[out.index("generator 'mlp'"):out.index("discriminator 'mlp'")]
    assert "MLP generator" in gen and "args (in a recipe: generator.args; or networks.<name>: {name: mlp," in gen
    assert "hidden: (256, 512, 1024)" in gen and "batchnorm: True" in gen
    assert "given by ganforge: z_dim, out_shape, num_classes" in gen and "    z_dim:" not in gen
    code, out, _ = run_cli("plugins", "--args", "toy_grid")
    assert "args (in a recipe: data.args):" in out and "n: 100000" in out and "root" not in out
    code, _, err = run_cli("plugins", "--args", "mpl")
    assert code == 2 and "no part is registered as 'mpl'. Did you mean 'mlp'?" in err and err.count("\n") == 1
    code, out, _ = run_cli("plugins", "--json")
    parts = {(p["kind"], p["name"]): p for p in json.loads(out)["parts"]}
    args = {a["name"]: a for a in parts[("discriminator", "mlp")]["args"]}
    assert args["hidden"] == {"name": "hidden", "default": [512, 256], "required": False, "context": False,
                              "set_by": "recipe"}
    assert args["in_shape"]["context"] and args["in_shape"]["required"]


def test_plugins_args_of_a_system_lists_its_networks_optimizers_and_phases(run_cli):
    """Issue #37: a recipe for a multi-network system could not be written from `ganforge plugins`;
    now --args OBJECTIVE lists what the recipe's networks.<name>, optimizers.<name> and
    phases.<name> refer to, and --json carries the same."""
    code, out, _ = run_cli("plugins", "--args", "vqgan")
    assert code == 0
    lines = [" ".join(line.split()) for line in out.splitlines()]
    for expected in ["E encoder: default vq_encoder; the system passes code_dim, in_shape",
                     "Q quantizer: default vector_quantizer; the system passes code_dim",
                     "G decoder: default vq_decoder; the system passes code_dim, out_shape",
                     "D discriminator: default patchgan {'n_layers': 2, 'norm': 'batch'}; the system passes in_shape",
                     "G over E, Q, G; lr 0.0002, betas (0.5, 0.999)",
                     "G steps optimizer G; trains E, Q, G",
                     "D steps optimizer D; trains D; on the previous phase's batch; penalties on D"]:
        assert expected in lines, expected
    code, out, _ = run_cli("plugins", "--args", "hifigan")
    assert "D steps optimizer D; trains MPD, MSD; penalties on MPD, MSD; keeps G's output for the next phase" in \
        [" ".join(line.split()) for line in out.splitlines()]
    code, out, _ = run_cli("plugins", "--json")
    parts = {(p["kind"], p["name"]): p for p in json.loads(out)["parts"]}
    system = parts[("objective", "vqgan")]["system"]
    assert list(system["networks"]) == ["E", "Q", "G", "D"] and system["networks"]["Q"]["kind"] == "quantizer"
    assert system["networks"]["D"]["default_args"] == {"n_layers": 2, "norm": "batch"}
    assert system["optimizers"]["G"]["networks"] == ["E", "Q", "G"]
    assert [(p["name"], p["new_batch"], p["penalize"]) for p in system["phases"]] == [("G", True, []), ("D", False, ["D"])]
    assert [p["name"] for p in parts[("objective", "cyclegan")]["system"]["phases"]] == ["G", "D"]
    assert parts[("objective", "unconditional")]["system"]["networks"]["G"]["recipe_key"] == "networks.G (or generator:)"


def test_plugins_args_labels_what_a_system_supplies_under_the_key_that_sets_the_rest(run_cli):
    """Issue #37: mlp_encoder listed in_shape and z_dim as required recipe arguments under a key
    (network.args) that does not exist; hifigan_generator showed n_mels and hop the same way."""
    code, out, _ = run_cli("plugins", "--args", "hifigan_generator")
    assert "args (in a recipe: networks.G.args (objective hifigan); or generator.args;" in out
    assert "given by objective hifigan (network G): n_mels, hop" in out
    assert "    n_mels:" not in out and "    hop:" not in out and "    version: 'v1'" in out
    code, out, _ = run_cli("plugins", "--args", "mlp_encoder")
    assert "network.args" not in out and "networks.<name>: {name: mlp_encoder, args: ...}" in out
    assert "    in_shape:" not in out and "in_shape, z_dim" in out
    code, out, _ = run_cli("plugins", "--args", "vq_encoder")
    assert "args (in a recipe: networks.E.args (objective vqgan)):" in out and "    width: 32" in out
    assert "given by objective vqgan (network E): in_shape, code_dim" in out and "    code_dim:" not in out
