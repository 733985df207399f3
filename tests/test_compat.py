"""Compatibility with ganforge 0.1.0: a checkpoint it wrote (format 1, committed in
tests/fixtures/v0.1.0-toy, see its README) resumes with today's code and reaches the state the
0.1.0 run reached; it also samples. Plugins: the built-ins have one source.

The fixture was written on an Intel CPU: there the state is reached bit for bit; on other CPUs
(this project's AMD EPYC machines, issue #27) the float kernels round differently, so each
tensor must match to 1e-5 of its largest value (measured: 2e-7 at most). A resume that
restored the wrong state misses that by orders of magnitude."""
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ganforge.contract.recipes import load_recipe
from ganforge.training.engine import train

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "v0.1.0-toy"
#: the overrides the fixture's run used (its README)
OVERRIDES = ["train.n_critic=2", "data.args.n=1000", "data.batch_size=64", "generator.args.hidden=[32,32]",
             "discriminator.args.hidden=[32,32]", "penalties=[{name: r1, weight: 0.1, every: 3}]",
             "train.ema=0.9", "train.ema_start=5", "log.every=5", "log.checkpoint_every=10", "log.keep=2",
             "log.progress=false", "metrics=[]", "log.sample_every=0"]
V1_NAMES = {"generator": "model.G", "discriminator": "model.D", "generator_ema": "ema.G",
            "optimizer_g": "optim.G", "optimizer_d": "optim.D"}


def test_a_checkpoint_written_by_ganforge_0_1_resumes_exactly(tmp_path, capsys):
    (tmp_path / "checkpoints").mkdir()
    shutil.copytree(FIXTURE / "step-00000010", tmp_path / "checkpoints" / "step-00000010")
    state = train(load_recipe("toy_grid", [f"out_dir={tmp_path}", "train.steps=20", "resume=auto", *OVERRIDES]))
    assert "resumed from" in capsys.readouterr().out
    assert state.step == 20 and state.phase_steps == {"D": 40, "G": 20}
    final = tmp_path / "checkpoints" / "step-00000020"
    for old, new in V1_NAMES.items():
        expected = load_file(str(FIXTURE / "expected-step-20" / f"{old}.safetensors"))
        got = load_file(str(final / f"{new}.safetensors"))
        assert expected.keys() == got.keys(), old
        for key in expected:
            e, g = expected[key], got[key]
            if not e.is_floating_point():
                assert torch.equal(e, g), f"{old}/{key}"
                continue
            worst = (e - g).abs().max().item()
            assert worst <= 1e-5 * max(e.abs().max().item(), 1e-12), f"{old}/{key}: {worst}"
    # the losses logged after the resume are the 0.1.0 run's
    import json

    old_rows = [json.loads(r) for r in (FIXTURE / "metrics.jsonl").read_text().splitlines()]
    new_rows = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    pick = lambda rows: [{k: v for k, v in r.items() if k != "images_per_s"} for r in rows if r.get("step", 0) > 10]  # noqa: E731
    assert len(pick(new_rows)) == 2
    for a, b in zip(pick(old_rows), pick(new_rows), strict=True):
        assert a.keys() == b.keys() and a == pytest.approx(b, rel=1e-5, abs=1e-7)


def test_a_format_1_checkpoint_samples(tmp_path):
    from ganforge.cli import main

    assert main(["sample", str(FIXTURE / "step-00000010"), "--n", "8", "--out", str(tmp_path / "s.npz")]) == 0
    assert np.load(tmp_path / "s.npz")["samples"].shape == (8, 2)


def test_builtin_plugins_have_one_source_and_load_without_autoload(monkeypatch, tmp_path, mnist_dir):
    """The built-ins registered by hand (autoload off) are exactly ganforge's entry points and
    every plugin module under plugins/ (its family folders included); mnist_fc_r1 (InfoGAN's networks) builds that way."""
    import ganforge.plugins
    from ganforge.contract.manager import PluginManager, builtin_plugins

    folder = Path(ganforge.plugins.__file__).parent
    modules = {"ganforge.plugins." + ".".join(p.relative_to(folder).with_suffix("").parts)
               for p in folder.rglob("*.py") if "@hookimpl" in p.read_text() and "ganforge-sngan" not in p.parts}
    assert set(builtin_plugins().values()) == modules and "ganforge.plugins.image.infogan" in modules
    monkeypatch.setenv("GANFORGE_DISABLE_PLUGIN_AUTOLOAD", "1")
    pm = PluginManager()
    assert set(pm.plugin_names()) == set(builtin_plugins())
    state = train(load_recipe("mnist_fc_r1", [f"out_dir={tmp_path}", f"data.root={mnist_dir}", "train.steps=1",
                                              "data.batch_size=8", "log.progress=false", "metrics=[]",
                                              "log.sample_every=0"]), plugins=pm)
    assert state.step == 1


def test_component_hooks_go_through_pluggy(monkeypatch):
    """A hookwrapper sees the registration call, and each part is still attributed to the plugin
    that registered it."""
    import ganforge
    from ganforge.contract.manager import PluginManager

    seen = []

    class Wrapper:
        @ganforge.hookimpl(wrapper=True)
        def ganforge_register_losses(self, register):
            seen.append("before")
            result = yield
            seen.append("after")
            return result

    class Mine:
        @ganforge.hookimpl
        def ganforge_register_losses(self, register):
            from ganforge.plugins.losses import BCE
            register("mine_bce", BCE)

    pm = PluginManager()
    pm.register(Wrapper(), name="wrapper")
    pm.register(Mine(), name="mine")
    registry = pm.registry
    assert seen == ["before", "after"]
    assert registry.get("loss", "mine_bce").plugin.name == "mine"
    assert registry.get("loss", "bce").plugin.name == "losses"
    assert registry.get("generator", "infogan").plugin.name == "infogan"
