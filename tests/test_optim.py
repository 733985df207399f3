"""Optimizer types, learning-rate schedules and gradient clipping (issue #25, item 1)."""
import json
import math

import pytest
import torch
from safetensors.torch import load_file

from ganforge.contract.recipes import load_recipe
from ganforge.recipe.types import Schedule
from ganforge.training.engine import train
from ganforge.errors import ConfigError
from ganforge.recipe.schedule import factor

QUICK = ["log.progress=false", "metrics=[]", "log.sample_every=0", "log.film_every=0", "log.animate=false"]


@pytest.mark.parametrize("schedule, steps, expected", [
    # linear from step 20 of 100 to 0.1: at 60 half-way, 1 - 0.5 * 0.9
    (Schedule("linear", start=20, final=0.1), 100, {0: 1.0, 20: 1.0, 60: 0.55, 100: 0.1}),
    (Schedule("linear", start=0.5), 10, {4: 1.0, 5: 1.0, 6: 0.8, 9: 0.2}),
    # cosine after a 10-step warm-up: ramp 0, 0.5, then 0.5 * (1 + cos(pi * done))
    (Schedule("cosine", warmup=10), 110, {0: 0.0, 5: 0.5, 10: 1.0, 60: 0.5, 85: 0.5 * (1 + math.cos(0.75 * math.pi)),
                                          110: 0.0}),
    (Schedule("cosine", final=0.2), 100, {50: 0.6, 100: 0.2}),
    (Schedule("exponential", gamma=0.5), 100, {0: 1.0, 1: 0.5, 3: 0.125}),
    (Schedule("exponential", gamma=0.5, start=10), 100, {9: 1.0, 10: 1.0, 12: 0.25}),
    (Schedule("constant", warmup=4), 100, {0: 0.0, 1: 0.25, 4: 1.0, 50: 1.0}),
])
def test_schedule_factors_by_hand(schedule, steps, expected):
    for step, value in expected.items():
        eager = factor(schedule, float(step), steps)
        graph = factor(schedule, torch.tensor(float(step), dtype=torch.float64), steps)
        assert eager == pytest.approx(value, abs=1e-12), step
        assert float(graph) == pytest.approx(eager, abs=1e-15), step  # one formula, both evaluations


def test_exponential_per_epoch_counts_data_epochs():
    s = Schedule("exponential", gamma=0.999, per="epoch")  # HiFi-GAN's ExponentialLR(0.999) per epoch
    assert factor(s, 9.0, 1000, steps_per_epoch=10) == 1.0
    assert factor(s, 10.0, 1000, steps_per_epoch=10) == 0.999
    assert factor(s, 25.0, 1000, steps_per_epoch=10) == pytest.approx(0.999 ** 2)


def _rows(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_types_arguments_and_schedules_reach_the_optimizers(tmp_path):
    """optim sets every optimizer; optimizers.<name> overrides one; the schedule's learning rate
    is set for each step (here the last, step 5 of 6: cosine after a 2-step warm-up)."""
    state = train(load_recipe("toy_grid", [
        f"out_dir={tmp_path}", "train.steps=6", "data.args.n=640", "optim.lr_decay=none",
        "optim.type=adamw", "optim.args={eps: 1.0e-6, amsgrad: true}", "optim.weight_decay=0.05",
        "optim.schedule={type: cosine, warmup: 2}",
        "optimizers.D={type: sgd, lr: 0.01, args: {momentum: 0.9}, schedule: {type: exponential, gamma: 0.5}}",
        *QUICK]))
    g = state.optimizers["G"].optimizer
    d = state.optimizers["D"].optimizer
    assert type(g) is torch.optim.AdamW and type(d) is torch.optim.SGD
    gg, dg = g.param_groups[0], d.param_groups[0]
    assert gg["eps"] == 1e-6 and gg["amsgrad"] and gg["weight_decay"] == 0.05 and gg["betas"] == (0.5, 0.9)
    assert dg["momentum"] == 0.9 and "betas" not in dg and dg["weight_decay"] == 0.05  # (optim's, SGD takes it)
    assert gg["lr"] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 3 / 4)))  # step 5: (5-2)/(6-2) done
    assert dg["lr"] == pytest.approx(0.01 * 0.5 ** 5)


def test_clipping_bounds_the_update_and_logs_the_norm(tmp_path):
    """SGD with lr 1 and clip c: D's one update per step moves its weights by exactly
    min(norm, c) (the norm before clipping is logged as grad_norm_d)."""
    out = tmp_path / "run"
    common = [f"out_dir={out}", "data.args.n=640", "optim.lr_decay=none", "log.every=1", "train.ema=0",
              "optimizers.D={type: sgd, lr: 1.0, clip: 0.01}", "log.checkpoint_every=1", *QUICK]
    train(load_recipe("toy_grid", ["train.steps=1", *common]))
    train(load_recipe("toy_grid", ["train.steps=2", "resume=auto", *common]))
    before = load_file(str(next((out / "checkpoints" / "step-00000001").glob("model.D*.safetensors"))))
    after = load_file(str(next((out / "checkpoints" / "step-00000002").glob("model.D*.safetensors"))))
    moved = torch.cat([(after[k] - before[k]).flatten() for k in before]).norm().item()
    norm = _rows(out)[-1]["grad_norm_d"]
    assert norm > 0.01  # (the test needs a gradient larger than the clip)
    assert moved == pytest.approx(0.01, rel=1e-4)
    assert "grad_norm_g" not in _rows(out)[-1]  # G has no clip


@pytest.mark.parametrize("overrides, message", [
    (["optim.type=adamz"], "optim.type: unknown optimizer 'adamz'; torch.optim has adadelta, adafactor, adagrad, adam"),
    (["optimizers.D.type=lbfgs"], "optimizers.D.type: LBFGS needs a closure"),
    (["optim.type=sparseadam"], "optim.type: SparseAdam updates sparse gradients only"),
    (["optim.args={momentum: 0.9}"], "optim.args: Adam does not take momentum here; its arguments are lr, betas"),
    (["optimizers.D={type: sgd, betas: [0.5, 0.9]}"], "optimizers.D.betas: SGD takes no betas"),
    (["optim.args={lr: 0.1}"], "optim.args: Adam does not take lr here"),
    (["optim.schedule.type=cosin"], "optim.schedule.type: unknown schedule 'cosin'; known: constant, linear, cosine"),
    (["optim.schedule={type: cosine, warmup: 10}", "train.steps=10"], "optim.schedule.warmup is a step from 0 to"),
    (["optimizers.G.schedule={type: linear, start: 0.999}", "train.steps=100"], "optimizers.G.schedule.start"),
    (["optim.schedule={type: exponential, gamma: 1.5}"], "optim.schedule.gamma is the exponential decay per step"),
    (["optim.schedule={type: exponential, per: batch}"], "optim.schedule.per: 'step' or 'epoch'"),
    (["optim.clip=0"], "optim.clip is the largest gradient norm kept, a number > 0"),
    (["optim.lr_decay=linear", "optim.schedule.type=cosine"], "optim.lr_decay and optim.schedule both set"),
])
def test_bad_optimizer_settings_get_one_line(tmp_path, overrides, message):
    with pytest.raises(ConfigError) as err:
        recipe = load_recipe("toy_grid", [f"out_dir={tmp_path}", "optim.lr_decay=none", *overrides]
                             if "optim.lr_decay=linear" not in overrides else [f"out_dir={tmp_path}", *overrides])
        train(recipe)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "checkpoints").exists()  # refused before anything is written


def test_an_argument_the_optimizer_refuses_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"optimizer 'D' \(Adam\): Invalid epsilon value: -1"):
        train(load_recipe("toy_grid", [f"out_dir={tmp_path}", "optimizers.D.args={eps: -1}", *QUICK]))


def test_accumulation_trains_like_the_whole_batch(tmp_path):
    """toy_grid's D has no BatchNorm (and G none here), and G's noise for 2 x 128 is the noise for 256
    (torch draws normals in blocks of 16): 2 micro-batches of 128 = one batch of 256, up to rounding."""
    from ganforge.training.batches import micro_batches

    common = ["train.steps=4", "data.args.n=4096", "generator.args.batchnorm=false", "train.ema=0", *QUICK]
    one = train(load_recipe("toy_grid", [f"out_dir={tmp_path / 'one'}", *common]))
    two = train(load_recipe("toy_grid", [f"out_dir={tmp_path / 'two'}", "train.accumulate=2", *common]))
    for name in ("G", "D"):
        a, b = one.nets[name].state_dict(), two.nets[name].state_dict()
        assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5, name
    moved = train(load_recipe("toy_grid", [f"out_dir={tmp_path / 'three'}", *common, "train.steps=1"]))
    assert any((moved.nets["G"].state_dict()[k] - one.nets["G"].state_dict()[k]).abs().max() > 1e-3
               for k in moved.nets["G"].state_dict())  # (training moved the weights well past the tolerance)
    x, y = torch.arange(6), torch.arange(6) * 10
    parts = micro_batches((x, y), 3)
    assert [p[1].tolist() for p in parts] == [[0, 10], [20, 30], [40, 50]] and isinstance(parts[0], tuple)
    with pytest.raises(ConfigError, match=r"train.accumulate splits each batch into equal micro-batches: a "
                                          r"divisor of data.batch_size \(256\) >= 1, got 3"):
        load_recipe("toy_grid", ["train.accumulate=3"])
