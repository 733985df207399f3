import re

import pytest
import torch

from ganforge.contract.recipes import load_recipe
from ganforge.recipe.load import recipe_from_dict
from ganforge.recipe.types import Recipe
from ganforge.errors import ConfigError


def test_defaults_and_overrides_are_typed():
    r = load_recipe("toy_grid", ["train.steps=500", "optim.betas=[0.0,0.99]", "log.wandb=true",
                                 "loss=hinge", "generator.args.hidden=[8,8]"])
    assert r.train.steps == 500
    assert r.optim.betas == [0.0, 0.99]
    assert r.log.wandb is True
    assert r.loss.name == "hinge" and r.loss.args == {}
    assert r.generator.args["hidden"] == [8, 8] and r.generator.args["batchnorm"] is False
    assert r.optim.lr_g == pytest.approx(1e-3)  # from the recipe file, not the default


def test_override_name_of_shorthand_part_keeps_working():
    r = load_recipe("toy_grid", ["loss.name=lsgan"])
    assert r.loss.name == "lsgan"


def test_unknown_key_did_you_mean():
    with pytest.raises(ConfigError, match=r"Unknown recipe key 'train.stpes'.*Did you mean 'steps'"):
        load_recipe("toy_grid", ["train.stpes=10"])
    with pytest.raises(ConfigError, match=r"Unknown recipe key 'optimizer'.*Did you mean 'optimizers'"):
        recipe_from_dict({"optimizer": {}})
    with pytest.raises(ConfigError, match=r"Unknown recipe key 'optimizers.D.learning_rate'.*Keys of 'optimizers.D': lr, "):
        recipe_from_dict({"optimizers": {"D": {"learning_rate": 1e-3}}})
    with pytest.raises(ConfigError, match=r"Recipe key 'networks.G' must be a mapping"):
        recipe_from_dict({"networks": {"G": 3}})
    # a key of another section names where it lives (issue #35: train.batch_size said nothing)
    with pytest.raises(ConfigError, match=r"Unknown recipe key 'train.batch_size'. It is data.batch_size: set that"):
        load_recipe("toy_grid", ["train.batch_size=8"])
    with pytest.raises(ConfigError, match=r"Unknown recipe key 'train.seed'. It is seed: set that instead"):
        load_recipe("toy_grid", ["train.seed=1"])
    with pytest.raises(ConfigError, match=r"Unknown recipe key 'penalties.0.steps'. Keys of 'penalties.0'"):
        load_recipe("toy_grid", ["penalties=[{name: r1, steps: 3}]"])


@pytest.mark.parametrize("override, expected", [
    ("train.steps=ten", r"'train.steps' must be int, got str 'ten'"),
    ("train.steps=1.5", r"'train.steps' must be int"),
    ("log.wandb=3", r"'log.wandb' must be bool"),
    ("optim.lr_g=[1]", r"'optim.lr_g' must be float"),
    ("data=5", r"'data' must be a mapping"),
])
def test_wrong_types(override, expected):
    with pytest.raises(ConfigError, match=expected):
        load_recipe("toy_grid", [override])


def test_value_checks():
    with pytest.raises(ConfigError, match="train.precision must be one of auto, no, bf16, fp16.*'bf16'"):
        load_recipe("toy_grid", ["train.precision=bf61"])
    with pytest.raises(ConfigError, match="train.ema is a decay"):
        load_recipe("toy_grid", ["train.ema=1.5"])
    with pytest.raises(ConfigError, match="must look like key.sub=value"):
        load_recipe("toy_grid", ["train.steps"])


def test_unknown_recipe_lists_known():
    with pytest.raises(ConfigError, match=r"Recipe 'toy_grd' not found.*Known recipes:.*toy_ring.*Did you mean 'toy_grid'"):
        load_recipe("toy_grd")


def test_every_shipped_recipe_loads():
    from pathlib import Path

    recipes = sorted((Path(__file__).parent.parent / "recipes").glob("*.yaml"))
    assert {p.stem for p in recipes} >= {"mnist_seed", "mnist_dcgan", "cifar10_dcgan", "toy_ring", "toy_grid"}
    for path in recipes:
        assert isinstance(load_recipe(str(path)), Recipe)


def test_yaml_scalars_users_write():
    r = load_recipe("toy_grid", ["train.precision=no", "optim.lr_g=5e-4", "optim.lr_d=1E-3", "log.wandb=false",
                                 "train.steps=100"])
    assert r.train.precision == "no" and r.optim.lr_g == 5e-4 and r.optim.lr_d == 1e-3
    assert r.log.wandb is False and r.train.steps == 100 and isinstance(r.train.steps, int)
    with pytest.raises(ConfigError, match="'log.wandb' must be bool, got str 'yes'"):
        load_recipe("toy_grid", ["log.wandb=yes"])


def test_the_readme_key_table_documents_every_recipe_key():
    """Every key of the recipe schema has a row in README.md's key table, and every row names a
    real key (compound rows: `optim.lr_g`, `lr_d` share the first name's section)."""
    import dataclasses
    import re
    from pathlib import Path

    from ganforge.recipe.types import Part, Recipe

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    documented = set()
    for cell in re.findall(r"^\| (`[^|]*`) \|", readme, re.M):
        names = re.findall(r"`([\w.]+)`", cell)
        section = names[0].rsplit(".", 1)[0] + "." if "." in names[0] else ""
        documented |= {n if "." in n or not section else section + n for n in names}
    schema = set()
    for f in dataclasses.fields(Recipe):
        inner = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(inner) and not isinstance(inner, Part):
            schema |= {f"{f.name}.{g.name}" for g in dataclasses.fields(inner)}
        else:
            schema.add(f.name)
    assert schema - documented == set(), "keys missing from README's table"
    assert documented - schema == set(), "README documents keys that do not exist"


def test_recipe_inheritance(tmp_path, run_cli):
    """base: a shipped name or a path; sections merge key by key, lists are replaced, a part
    whose name changes loses the base's args for it; the recipe's own keys beat its base's and
    command-line overrides beat both; chains resolve; cycles and missing bases are one line."""
    (tmp_path / "mid.yaml").write_text("base: mnist_cgan\nloss: hinge\ntrain: {steps: 100}\npenalties: []\n"
                                       "generator: {name: mlp}\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "leaf.yaml").write_text("base: ../mid\ndata: {name: fashion_mnist}\n"
                                                "discriminator: {args: {ndf: 16}}\n")
    r = load_recipe(str(tmp_path / "sub" / "leaf.yaml"), ["train.ema=0.5"])
    base = load_recipe("mnist_cgan")
    assert r.name == "leaf" and r.loss.name == "hinge" and r.penalties == []  # lists replaced
    assert r.train.steps == 100 and r.train.ema == 0.5 and r.train.z_dim == base.train.z_dim  # nested merge
    assert r.optim.betas == base.optim.betas and r.objective.name == "conditional"
    assert r.generator.name == "mlp" and r.generator.args == {}  # another part: no infogan args
    assert r.discriminator.args == {**base.discriminator.args, "ndf": 16}  # same part: args merged
    assert r.data.name == "fashion_mnist" and r.data.root == base.data.root  # root kept
    (tmp_path / "a.yaml").write_text("base: b\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    code, _, err = run_cli("train", tmp_path / "a.yaml")
    assert code == 2 and "its bases form a cycle (a -> b -> a)" in err and err.count("\n") == 1
    (tmp_path / "c.yaml").write_text("base: mnist_cgann\n")
    code, _, err = run_cli("train", tmp_path / "c.yaml")
    assert code == 2 and "base 'mnist_cgann' not found" in err and "Did you mean 'mnist_cgan'" in err
    assert err.count("\n") == 1
    code, out, _ = run_cli("recipe", "show", tmp_path / "sub" / "leaf.yaml", "train.steps=7")
    assert code == 0 and "name: leaf" in out and "steps: 7" in out and "ndf: 16" in out
    code, out, _ = run_cli("recipe", "list")
    entry = re.search(r"^mnist_cgan .*?(?=^\S)", out, re.M | re.S).group(0)  # until the next recipe
    entry = " ".join(entry.split())  # (wrapped to the terminal's width)
    assert code == 0 and entry.startswith("mnist_cgan Class-conditional MNIST: the networks")
    assert "measured: conditional accuracy 98.9%" in entry and "one CPU thread." in entry  # whole, wrapped
    # what an installed package's user can use: no issue numbers, no file of the source repository, nothing cut
    assert "issue #" not in out and "RESULTS.md" not in out and "..." not in out


def test_every_shipped_recipe_says_what_was_measured_with_it():
    """`ganforge recipe list` shows each recipe's measured result (or that there is none yet)."""
    from ganforge.recipe.sources import shipped_recipes as _shipped_recipes

    missing = [p.stem for p in _shipped_recipes().glob("*.yaml") if "\n# Measured: " not in "\n" + p.read_text()]
    assert not missing, f"recipes without a '# Measured:' line: {missing}"


def test_the_readme_mechanics_recipe_block_is_a_valid_recipe(tmp_path):
    """README's "Small datasets, schedules and the mechanics" YAML, over mnist_dcgan, loads and
    resolves: AdamW with its schedule and clip for both optimizers, D's own schedule."""
    import re
    from pathlib import Path

    from ganforge.training.build import build_system
    from ganforge.contract.recipes import load_recipe
    from ganforge.contract.manager import PluginManager
    from ganforge.training.optim import choices

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = re.search(r"```yaml\n(augment: .*?)```", readme, re.S).group(1)
    (tmp_path / "mech.yaml").write_text("base: mnist_dcgan\n" + block)
    recipe = load_recipe(str(tmp_path / "mech.yaml"))
    assert recipe.augment.name == "ada" and recipe.train.accumulate == 4 and recipe.phases["D"].start == 2000
    system = build_system(recipe, PluginManager().registry, (1, 28, 28))
    chosen = choices(recipe, system)
    assert chosen["G"].cls.__name__ == "AdamW" and chosen["G"].schedule.type == "cosine" and chosen["G"].clip == 10.0
    assert chosen["D"].schedule.type == "exponential" and chosen["D"].kwargs["eps"] == 1e-8
    assert chosen["G"].kwargs["betas"] == (0.0, 0.9) and chosen["G"].ramps["betas"][1].final == 0.99  # a ramp
    assert not chosen["D"].ramps


def test_a_dotted_override_of_a_part_the_recipe_does_not_name_sets_the_default_part(tmp_path):
    """Issue #37: `generator.args.hidden=[32]` on a recipe naming no generator failed ("Recipe
    key 'generator.name' is empty") though `recipe show` displays the default, and so did
    `networks={G: {args: ...}}`: both now set arguments of the part that would be used."""
    from ganforge.contract.manager import PluginManager
    from ganforge.training.build import build_networks, build_system

    bare = tmp_path / "bare.yaml"
    bare.write_text("data: {name: toy_grid}\ntrain: {steps: 2}\n")
    recipe = load_recipe(str(bare), ["generator.args.hidden=[32]"])
    assert recipe.generator.name == "mlp" and recipe.generator.args == {"hidden": [32]}
    recipe = load_recipe(str(bare), ["networks={G: {args: {hidden: [16]}}}"])
    registry = PluginManager().registry
    nets = build_networks(recipe, registry, build_system(recipe, registry, (2,)))
    first = next(m for m in nets["G"].modules() if isinstance(m, torch.nn.Linear))
    assert first.out_features == 16  # the generator shorthand's part (mlp), with these args
