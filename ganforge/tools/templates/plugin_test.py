"""Tests of the my_part plugin: it registers, and ganforge trains two steps with it (toy data).
They pass before ``pip install .`` (the module is registered by hand, as its entry point would
register it) and after (ganforge loads it through the entry point)."""
import json
import os

os.environ.setdefault("WANDB_MODE", "disabled")

import ganforge  # noqa: E402 - its public API: load_recipe, train, PluginManager (docs/writing-plugins.md)
import ganforge_my_part as plugin  # noqa: E402

KIND = "my_kind"
OVERRIDES = my_overrides


def plugins():
    pm = ganforge.PluginManager()  # the built-in parts and every installed plugin (this one, once installed)
    if "my_part" not in pm.plugin_names():  # not installed yet: register it by hand
        pm.register(plugin, name="my_part")
    return pm


def test_the_part_is_registered_with_a_description():
    entry = plugins().registry.get(KIND, "my_part")
    assert entry.plugin.name == "my_part" and entry.description


def test_ganforge_trains_two_steps_with_it(tmp_path):
    recipe = ganforge.load_recipe("toy_grid", [f"out_dir={tmp_path}", "train.steps=2", "log.every=1",
                                               "log.eval_every=2", "log.progress=false", "log.sample_every=0",
                                               "metrics=[]", *OVERRIDES])
    state = ganforge.train(recipe, plugins=plugins())
    assert state.step == 2
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(v == v for r in rows for v in r.values() if isinstance(v, float))  # no NaN
    network = state.system.network  # a network by the system's name, without DDP's wrapper
    used = {  # the run used this plugin's part
        "generator": lambda: type(network("G")).__module__ == plugin.__name__,
        "discriminator": lambda: type(network("D")).__module__ == plugin.__name__,
        "network": lambda: type(network("E")).__module__ == plugin.__name__,
        "loss": lambda: type(state.system.loss).__module__ == plugin.__name__,
        "objective": lambda: type(state.system).__module__ == plugin.__name__,
        "dataset": lambda: state.config.data.name == "my_part" and len(state.dataset) > 0,
        "penalty": lambda: any("penalty_my_part" in r for r in rows),
        "metric": lambda: any(k.startswith("eval/my_part/") for r in rows for k in r),
        "augment": lambda: type(state.augmentation).__module__ == plugin.__name__,
    }
    assert used[KIND]()
