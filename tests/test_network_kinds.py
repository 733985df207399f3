"""Networks of new kinds and recipes shipped by plugin packages (issue #28, item 2): the
BiGAN-style author path. tests/bigan_pkg is an outside package: a system with an encoder
(kind ``encoder``, built by default from ``mlp_encoder``), a pair discriminator by default,
and a recipe it ships."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import ganforge
from ganforge.errors import ConfigError
from test_third_party import pip_install

PKG = Path(__file__).resolve().parent / "bigan_pkg"
QUICK = ["log.progress=false", "metrics=[]", "log.sample_every=0", "log.film_every=0", "log.animate=false"]


@pytest.fixture
def bigan(monkeypatch):
    monkeypatch.syspath_prepend(str(PKG))
    import ganforge_bigan

    pm = ganforge.PluginManager()
    if "bigan" not in pm.plugin_names():  # (not installed here: registered by hand)
        pm.register(ganforge_bigan, name="bigan")
    return pm


def test_a_network_of_a_new_kind_is_built_by_its_default_and_penalised_as_its_kind(tmp_path, bigan):
    recipe = ganforge.load_recipe(str(PKG / "ganforge_bigan" / "bigan_toy.yaml"),
                                  [f"out_dir={tmp_path}", "train.steps=20", "log.every=5", *QUICK])
    assert recipe.networks == {}  # the recipe names neither E nor D
    state = ganforge.train(recipe, plugins=bigan)
    E, D = (state.accelerator.unwrap_model(state.nets[n]) for n in ("E", "D"))
    assert type(E).__name__ == "MLPEncoder" and [m.out_features for m in E.net if hasattr(m, "out_features")] == [64, 2]
    assert type(D).__name__ == "PairDiscriminator" and state.system.networks["E"].kind == "encoder"
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(r["penalty_r1"] > 0 for r in rows)  # R1 on D(x, E(x)): both inputs
    # a recipe may still choose E's network and arguments by name
    state = ganforge.train(recipe, [f"out_dir={tmp_path / 'wide'}", "networks.E={name: mlp_encoder, args: {hidden: [32, 32]}}"],
                           plugins=bigan)
    E = state.accelerator.unwrap_model(state.nets["E"])
    assert [m.out_features for m in E.net if hasattr(m, "out_features")] == [32, 32, 2]


def test_a_network_of_a_new_kind_without_a_default_names_what_to_set(tmp_path, bigan):
    import ganforge_bigan

    def no_default(*, loss, z_dim, sample_shape, optim):
        system = ganforge_bigan.bigan(loss=loss, z_dim=z_dim, sample_shape=sample_shape, optim=optim)
        system.networks["E"].default = None
        return system

    class Plugin:
        @ganforge.hookimpl
        def ganforge_register_objectives(self, register):
            register("bigan_nodefault", no_default)

    bigan.register(Plugin(), name="nodefault")
    with pytest.raises(ConfigError) as err:
        ganforge.train(str(PKG / "ganforge_bigan" / "bigan_toy.yaml"),
                       [f"out_dir={tmp_path}", "objective=bigan_nodefault", *QUICK], plugins=bigan)
    assert "network 'E' (encoder) of objective 'bigan_nodefault' has no default" in str(err.value)
    assert "networks: {E: {name: ...}}" in str(err.value) and "mlp_encoder" in str(err.value)


@pytest.mark.slow
def test_an_installed_package_ships_a_recipe_and_its_encoder_is_used_from_python(tmp_path):
    """pip install the package; its recipe trains by name from the CLI, is listed with the
    package, and the trained encoder is loaded from Python with ganforge.load_run."""
    target = tmp_path / "site"
    pip_install(PKG, target)
    env = dict(os.environ, PYTHONPATH=str(target), WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    run = tmp_path / "run"

    def ganforge_cli(*args):
        return subprocess.run([sys.executable, "-m", "ganforge", *map(str, args)], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=600)

    listed = ganforge_cli("recipe", "list")
    assert listed.returncode == 0 and "bigan_toy" in listed.stdout and "[ganforge-bigan 0.1.0]" in listed.stdout
    trained = ganforge_cli("train", "bigan_toy", f"out_dir={run}", "train.steps=30")
    assert trained.returncode == 0, trained.stderr[-3000:]
    code = ("import ganforge, torch; run = ganforge.load_run(%r); E = run.network('E'); "
            "x = run.generate(5, seed=0); print(tuple(E(x).shape), type(E).__name__, run.step)" % str(run))
    used = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert used.returncode == 0, used.stderr[-3000:]
    assert used.stdout.strip() == "(5, 2) MLPEncoder 30"
    # exported, its model card's lines run where the package is installed, and name E and D
    assert ganforge_cli("export", run, "--out", tmp_path / "bigan_export").returncode == 0
    card = (tmp_path / "bigan_export" / "README.md").read_text()
    assert "`E` (encoder: `mlp_encoder`)" in card and "Not in this export: `D` (discriminator)" in card
    snippet = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    assert 'run.network("E")(torch.zeros(4, 2))' in snippet
    ran = subprocess.run([sys.executable, "-c", snippet + "\nprint(tuple(samples.shape))"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0 and ran.stdout.strip() == "(16, 2)", ran.stderr[-3000:]
