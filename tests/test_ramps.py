"""Ramps of hyper-parameters besides the learning rate (issue #25, item 1: R3GAN's schedules)."""
import math
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from ganforge.training.capture import reasons_against
from ganforge.contract.recipes import load_recipe
from ganforge.recipe.types import Ramp
from ganforge.training.engine import train
from ganforge.errors import ConfigError
from ganforge.contract.manager import PluginManager
from ganforge.recipe.ramps import ramp_value
from ganforge.training.schedules import Ramps
from test_reliability import _InterruptAt

QUICK = ["log.progress=false", "metrics=[]", "log.sample_every=0", "log.film_every=0", "log.animate=false",
         "optim.lr_decay=none", "data.args.n=640"]


@pytest.mark.parametrize("ramp, steps, expected", [
    # R3GAN's gamma: 0.05 -> 0.005 along a half cosine over the run; half-way the mean of both ends
    (Ramp(0.05, 0.005), 100, {0: 0.05, 25: 0.005 + 0.045 * 0.5 * (1 + math.cos(math.pi / 4)), 50: 0.0275,
                              100: 0.005, 150: 0.005}),
    # beta2 0.9 -> 0.99 linearly from step 20 to step 60, constant outside
    (Ramp(0.9, 0.99, type="linear", start=20, stop=60), 100, {0: 0.9, 20: 0.9, 30: 0.9225, 60: 0.99, 99: 0.99}),
    (Ramp(1.0, 0.0, type="linear", start=0.5), 10, {5: 1.0, 6: 0.8, 10: 0.0}),  # fractions of train.steps
])
def test_ramp_values_by_hand(ramp, steps, expected):
    for step, value in expected.items():
        eager = ramp_value(ramp, float(step), steps)
        graph = ramp_value(ramp, torch.tensor(float(step), dtype=torch.float64), steps)
        assert eager == pytest.approx(value, abs=1e-12), step
        assert float(graph) == pytest.approx(eager, abs=1e-15), step  # one formula, both evaluations


def test_a_ramped_penalty_weight_is_set_for_each_step_on_both_paths():
    ramped = SimpleNamespace(weight=Ramp(10.0, 0.0, type="linear"), every=4)
    fixed = SimpleNamespace(weight=2.5, every=4)
    penalties = [(ramped, None), (fixed, None)]
    eager = Ramps({}, {}, penalties, 8, device=torch.device("cpu"), graph=False)
    graph = Ramps({}, {}, penalties, 8, device=torch.device("cpu"), graph=True)
    for step in (0, 2, 6):
        eager.apply(step, torch.tensor(step))
        graph.apply(step, torch.tensor(step))
        assert eager.weight(ramped) == (10.0 - 10.0 * step / 8) * 4  # weight * every, this step's
        assert graph.weight(ramped).dtype == torch.float32  # a device tensor, updated in place
        assert graph.weight(ramped).item() == pytest.approx(eager.weight(ramped))
        assert eager.weight(fixed) == graph.weight(fixed) == 10.0


def _train(out, steps, extra, plugins=None):
    return train(load_recipe("toy_grid", [f"out_dir={out}", f"train.steps={steps}", "log.checkpoint_every=3",
                                          "log.every=1", *QUICK, *extra]), plugins=plugins)


R3GAN_LIKE = ["loss=relativistic", "optim.betas=[0.0, {initial: 0.9, final: 0.99, type: linear}]",
              "optimizers.D.weight_decay={initial: 0.0, final: 0.01}",
              "penalties=[{name: r1, weight: {initial: 1.0, final: 0.1}}, {name: r2, weight: {initial: 1.0, final: 0.1}}]"]


def test_ramped_betas_and_weight_decay_reach_the_optimizers_and_resume_exactly(tmp_path):
    """RpGAN + R1 + R2 with ramped gamma, beta2 and D's weight decay: each optimizer holds the
    ramp's value of the last step (5 of 6), and a run stopped at step 4 and resumed = 6 steps, bitwise."""
    whole = _train(tmp_path / "whole", 6, R3GAN_LIKE)
    g, d = (whole.optimizers[n].optimizer.param_groups[0] for n in ("G", "D"))
    assert g["betas"] == (0.0, pytest.approx(0.9 + 0.09 * 5 / 6)) == d["betas"]
    assert d["weight_decay"] == pytest.approx(0.01 * 0.5 * (1 - math.cos(math.pi * 5 / 6)))
    assert g["weight_decay"] == 0.0  # (only D's decay is ramped)
    pm = PluginManager()
    pm.register(_InterruptAt(4), name="interrupt")
    assert _train(tmp_path / "split", 6, R3GAN_LIKE, plugins=pm).step == 4
    _train(tmp_path / "split", 6, [*R3GAN_LIKE, "resume=auto"])
    for name in ("model.D", "model.G", "optim.D", "optim.G"):
        a = load_file(str(next((tmp_path / "whole" / "checkpoints" / "step-00000006").glob(f"{name}*.safetensors"))))
        b = load_file(str(next((tmp_path / "split" / "checkpoints" / "step-00000006").glob(f"{name}*.safetensors"))))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_a_constant_ramp_trains_exactly_like_the_number(tmp_path):
    """The plumbing changes nothing by itself: a ramp from 0.5 to 0.5 is the weight 0.5."""
    a = _train(tmp_path / "a", 4, ["penalties=[{name: r1, weight: 0.5, every: 2}]"])
    b = _train(tmp_path / "b", 4, ["penalties=[{name: r1, weight: {initial: 0.5, final: 0.5}, every: 2}]"])
    for k, v in a.nets["D"].state_dict().items():
        assert torch.equal(v, b.nets["D"].state_dict()[k]), k


def test_ramped_betas_keep_a_run_on_the_eager_step_and_say_why(tmp_path):
    from ganforge.contract.system import Optimizer

    recipe = load_recipe("toy_grid", [f"out_dir={tmp_path}", *QUICK, *R3GAN_LIKE])
    betas = recipe.optim.betas  # (as the built-in systems pass optim's betas on)
    system = SimpleNamespace(loss=None, capturable=True,
                             optimizers={"G": Optimizer(["G"], betas=betas), "D": Optimizer(["D"], betas=betas)})
    acc = SimpleNamespace(device=torch.device("cuda"), num_processes=1, mixed_precision="no")
    state = SimpleNamespace(config=recipe, accelerator=acc, dataset=None, system=system)
    text = "; ".join(reasons_against(state, []))
    assert "optimizer G ramps betas, which fused Adam reads on the host" in text
    assert "optimizer D ramps betas and weight_decay" in text


@pytest.mark.parametrize("overrides, message", [
    (["penalties=[{name: r1, weight: {initial: 1, final: 0, type: cosin}}]"],
     "penalties.0.weight.type: unknown ramp 'cosin'; known: cosine, linear"),
    (["optim.betas=[0.0, {initial: 0.9, final: 1.5}]"], "optim.betas.1.final must be in [0, 1), got 1.5"),
    (["optimizers.D.weight_decay={initial: 0.1, final: 0.0, start: 50, stop: 20}", "train.steps=100"],
     "optimizers.D.weight_decay: the ramp stops at step 20, not after it starts (step 50)"),
    (["penalties=[{name: r1, weight: {initial: 1, final: 0, stop: 200}}]", "train.steps=100"],
     "penalties.0.weight.stop is a step from 0 to train.steps (100)"),
    (["penalties=[{name: r1, weight: {initial: 1, finl: 0}}]"], "Unknown recipe key 'penalties.0.weight.finl'"),
])
def test_bad_ramps_get_one_line(tmp_path, overrides, message):
    with pytest.raises(ConfigError) as err:
        load_recipe("toy_grid", [f"out_dir={tmp_path}", *overrides])
    assert message in str(err.value) and "\n" not in str(err.value)
