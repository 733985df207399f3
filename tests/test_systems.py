"""Adversarial systems: a four-network system from a test plugin (tests/twoway_plugin.py, no
engine edit) trains with 1 and 2 processes, resumes bitwise, freezes what each phase does not
train; the recipe's per-network and per-optimizer sections; penalties in fp32 under autocast;
contract errors."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import ganforge
import twoway_plugin
from ganforge.contract.recipes import load_recipe
from ganforge.training.engine import train
from ganforge.errors import ConfigError, PluginError
from ganforge.contract.manager import PluginManager

TESTS = Path(__file__).resolve().parent


def _pm():
    pm = PluginManager()
    pm.register(twoway_plugin, name="twoway")
    return pm


def _checkpoint(folder):
    return {f.stem: load_file(str(f)) for f in sorted(folder.glob("*.safetensors"))}


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].keys() == b[name].keys(), name
        for key in a[name]:
            assert torch.equal(a[name][key], b[name][key]), f"{name}/{key}"


def test_four_network_system_trains_resumes_bitwise_and_freezes_per_phase(tmp_path):
    twoway_plugin.WATCH.clear()
    over = [*twoway_plugin.OVERRIDES, "train.steps=8"]
    state = train(load_recipe("toy_grid", [f"out_dir={tmp_path / 'whole'}", *over]), plugins=_pm())
    # every network, optimizer and the pool, by name
    assert set(state.nets) == {"G_AB", "G_BA", "D_A", "D_B"} and set(state.optimizers) == {"G", "D"}
    assert set(state.emas) == {"G_AB"}
    files = _checkpoint(tmp_path / "whole" / "checkpoints" / "step-00000008")
    assert set(files) == {"model.G_AB", "model.G_BA", "model.D_A", "model.D_B", "ema.G_AB", "optim.G",
                          "optim.D", "system-rank0", "rng-rank0"}
    assert int(files["system-rank0"]["filled"]) == 16 and files["system-rank0"]["pool_A"].abs().sum() > 0
    # the recipe's sections: D_B built from networks.D_B, optimizer D's lr from optimizers.D
    assert files["model.D_B"]["net.1.weight"].shape == (16, 2) and files["model.D_A"]["net.1.weight"].shape == (32, 2)
    assert [g["lr"] for g in state.optimizers["D"].param_groups] == [5e-4]
    assert [g["lr"] for g in state.optimizers["G"].param_groups] == [2e-4]
    # frozen networks: no gradient in each phase (requires_grad off, gradients untouched)
    kinds = {w[0] for w in twoway_plugin.WATCH}
    assert kinds == {"G", "D", "G left D", "D left G"}
    assert all(frozen and untouched for _, frozen, untouched in twoway_plugin.WATCH), twoway_plugin.WATCH
    rows = [json.loads(r) for r in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    for key in ("loss_g", "loss_d", "cycle", "adv_g", "penalty_r1_D_A", "penalty_r1_D_B"):
        assert key in rows[0], key
    assert len({r["cycle"] for r in rows}) > 1
    # stopped at step 4 and resumed: bitwise the uninterrupted run (networks, EMA, Adam, pool, RNG)
    train(load_recipe("toy_grid", [f"out_dir={tmp_path / 'parts'}", *twoway_plugin.OVERRIDES, "train.steps=4"]),
          plugins=_pm())
    resumed = train(load_recipe("toy_grid", [f"out_dir={tmp_path / 'parts'}", *over, "resume=auto"]), plugins=_pm())
    assert resumed.step == 8 and resumed.phase_steps == {"G": 8, "D": 8}
    _assert_same(files, _checkpoint(tmp_path / "parts" / "checkpoints" / "step-00000008"))


DDP_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    import torch
    from safetensors.torch import save_file
    import twoway_plugin
    from ganforge import load_recipe
    from ganforge.training.engine import train
    from ganforge.contract.manager import get_plugin_manager

    get_plugin_manager().register(twoway_plugin, name="twoway")
    state = train(load_recipe("toy_grid", twoway_plugin.OVERRIDES + sys.argv[1:]))
    acc = state.accelerator
    out = {{f"{{n}}.{{k}}": v for n, m in state.nets.items() for k, v in acc.unwrap_model(m).state_dict().items()}}
    out["watch"] = torch.tensor([frozen and untouched for _, frozen, untouched in twoway_plugin.WATCH])
    out["real"] = state.system._domains(next(iter(state.loader)))[0]
    save_file({{k: v.contiguous() for k, v in out.items()}}, f"{{state.output_dir}}/rank{{acc.process_index}}.safetensors")
""")


def _torchrun(tmp_path, *args):
    script = tmp_path / "ddp_twoway.py"
    script.write_text(DDP_SCRIPT.format(tests=str(TESTS)))
    env = dict(os.environ, ACCELERATE_USE_CPU="1", WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), *args], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_four_network_system_under_ddp_two_ranks(tmp_path):
    """2 gloo processes: identical weights on both ranks, different data, frozen networks get
    no gradient in either phase, each rank's pool checkpointed; stopped and resumed =
    uninterrupted, bitwise."""
    _torchrun(tmp_path, f"out_dir={tmp_path / 'whole'}", "train.steps=6")
    r0, r1 = (load_file(str(tmp_path / "whole" / f"rank{r}.safetensors")) for r in (0, 1))
    for key in r0:
        if key not in ("real", "watch"):
            assert torch.equal(r0[key], r1[key]), key
    assert not torch.equal(r0["real"], r1["real"])
    for r in (r0, r1):
        assert r["watch"].numel() >= 6 * 2 and bool(r["watch"].all())
    whole = _checkpoint(tmp_path / "whole" / "checkpoints" / "step-00000006")
    assert {"system-rank0", "system-rank1", "rng-rank0", "rng-rank1"} <= set(whole)
    assert not torch.equal(whole["system-rank0"]["pool_A"], whole["system-rank1"]["pool_A"])
    _torchrun(tmp_path, f"out_dir={tmp_path / 'parts'}", "train.steps=3")
    _torchrun(tmp_path, f"out_dir={tmp_path / 'parts'}", "train.steps=6", "resume=auto")
    _assert_same(whole, _checkpoint(tmp_path / "parts" / "checkpoints" / "step-00000006"))


def test_recipe_sections_must_name_the_systems_networks_and_optimizers(tmp_path):
    with pytest.raises(ConfigError, match=r"'networks' section names network 'G_BA', but the system has G, D"):
        train(load_recipe("toy_grid", [f"out_dir={tmp_path}", "networks={G_BA: {name: mlp}}"]))
    with pytest.raises(ConfigError, match=r"'optimizers' section names optimizer 'generator', but the system has "
                                          r"G, D. Did you mean 'G'|'optimizers' section names optimizer 'generator'"):
        train(load_recipe("toy_grid", [f"out_dir={tmp_path}", "optimizers={generator: {lr: 1.0e-3}}"]))
    with pytest.raises(ConfigError, match=r"penalties.0.networks names network 'D_C', but the system has D_A, D_B"):
        train(load_recipe("toy_grid", [f"out_dir={tmp_path}", *twoway_plugin.OVERRIDES,
                                       "penalties=[{name: r1, networks: [D_C]}]"]), plugins=_pm())
    assert not (tmp_path / "checkpoints").exists()


def test_a_penalty_can_target_one_discriminator(tmp_path):
    train(load_recipe("toy_grid", [f"out_dir={tmp_path}", *twoway_plugin.OVERRIDES, "train.steps=2",
                                   "penalties=[{name: r1, networks: [D_B]}]"]), plugins=_pm())
    row = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert "penalty_r1" in row and not any(k.startswith("penalty_r1_") for k in row)


def test_penalties_run_in_fp32_while_losses_run_under_autocast(tmp_path):
    """With train.precision=bf16 the phase losses are under bf16 autocast, but a penalty sees a
    D whose forward is fp32 (prepare()'s own autocast wrapper is removed)."""
    seen = {}

    class Probe:
        @ganforge.hookimpl
        def ganforge_register_penalties(self, register):
            def probe():
                def penalty(D, real, fake):
                    out = D(real.detach().float())
                    seen["penalty"] = out.dtype
                    return out.float().sum() * 0.0
                return penalty
            register("probe", probe)

        @ganforge.hookimpl
        def ganforge_register_losses(self, register):
            from ganforge.plugins.losses import BCE

            class Recording(BCE):
                def d_loss(self, real, fake):
                    seen["loss"] = real.dtype
                    return super().d_loss(real, fake)
            register("recording", Recording)

    pm = PluginManager()
    pm.register(Probe(), name="probe")
    train(load_recipe("toy_grid", [f"out_dir={tmp_path}", "train.precision=bf16", "train.steps=1",
                                   "penalties=[{name: probe}]", "loss=recording", "log.progress=false",
                                   "metrics=[]", "log.sample_every=0"]), plugins=pm)
    assert seen == {"loss": torch.bfloat16, "penalty": torch.float32}


def test_an_objective_written_for_plugin_api_1_is_a_clear_error(tmp_path, run_cli):
    class OldStyle:
        @ganforge.hookimpl
        def ganforge_register_objectives(self, register):
            register("old_style", lambda *, generator, discriminator, loss, z_dim: None)

        @ganforge.hookimpl
        def ganforge_register_losses(self, register):
            register("not_a_system_maker", lambda: None)

    pm = PluginManager()
    pm.register(OldStyle(), name="old-style")
    with pytest.raises(PluginError, match=r"objective 'old_style' .* is written for ganforge plugin API 1.*"
                                          r"Upgrading from plugin API 1"):
        train(load_recipe("toy_grid", [f"out_dir={tmp_path}", "objective=old_style"]), plugins=pm)

    class NotASystem:
        @ganforge.hookimpl
        def ganforge_register_objectives(self, register):
            register("not_a_system", lambda *, loss: object())

    pm.register(NotASystem(), name="not-a-system")
    with pytest.raises(PluginError, match=r"returned a object without networks, optimizers, phases.*GANSystem"):
        train(load_recipe("toy_grid", [f"out_dir={tmp_path}", "objective=not_a_system"]), plugins=pm)
    # a module declaring plugin API 1 is refused when loaded, pointing at the upgrade notes
    import types

    module = types.ModuleType("old_api")
    module.GANFORGE_PLUGIN_API = 1
    with pytest.raises(PluginError, match=r"written for ganforge plugin API 1, but this ganforge provides API 2.*"
                                          r"Upgrading from plugin API 1"):
        PluginManager().register(module, name="old-api")


def test_relativistic_loss_trains_through_the_unconditional_system(tmp_path):
    """G's loss sees D's real logits (computed with D frozen); the run learns."""
    state = train(load_recipe("toy_grid", [f"out_dir={tmp_path}", "loss=relativistic", "train.steps=30",
                                           "log.every=10", "log.progress=false", "metrics=[]",
                                           "log.sample_every=0"]))
    rows = [r for r in state.history if "loss_g" in r]
    assert len(rows) == 3 and all(0 < r["loss_g"] < 10 for r in rows)
    assert len({r["loss_g"] for r in rows}) == 3
