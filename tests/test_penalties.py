"""The built-in penalties against hand-computed values (a linear and a quadratic D)."""
import json

import pytest
import torch
from torch import nn

from ganforge.contract.recipes import load_recipe
from ganforge.training.engine import train
from ganforge.plugins.penalties import R1, R2, GradientPenalty


class Quadratic(nn.Module):
    """D(x) = sum(x^2) per sample: grad_x D = 2x, so each penalty has a closed form."""

    def forward(self, x):
        return x.pow(2).sum(1, keepdim=True)


def test_r1_r2_and_gp_by_hand(precision):
    """As the engine calls them: inside the phase's autocast, with autocast turned off around the
    penalty, on what the phase judged (under bf16 a generator's fakes are bf16; these values are
    exact in it). Penalties compute in fp32 and give the fp32 closed forms."""
    real = torch.tensor([[1.0, 2.0], [0.0, 3.0]])
    fake = torch.tensor([[0.5, 0.0], [2.0, 2.0]]).to(precision.dtype)
    D = Quadratic()
    linear = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[3.0, 4.0]]))  # ||grad|| = 5 everywhere
    with precision.autocast(), torch.autocast("cpu", enabled=False):
        values = [R1()(D, real, fake), R2()(D, real, fake), GradientPenalty()(linear, real, fake),
                  R2()(linear, real, fake)]
    assert all(v.dtype == torch.float32 for v in values)
    assert values[0].item() == pytest.approx(0.5 * (4 * 5 + 4 * 9) / 2)  # on reals only
    assert values[1].item() == pytest.approx(0.5 * (4 * 0.25 + 4 * 8) / 2)  # on fakes only
    assert values[2].item() == pytest.approx(16.0)
    assert values[3].item() == pytest.approx(12.5)


def test_r1_and_r2_together_train_and_log_both(tmp_path):
    state = train(load_recipe("toy_grid", [f"out_dir={tmp_path}", "train.steps=4", "log.every=2", "loss=relativistic",
                                           "penalties=[{name: r1, weight: 1}, {name: r2, weight: 1}]",
                                           "log.progress=false", "metrics=[]", "log.sample_every=0"]))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert state.step == 4 and all(r["penalty_r1"] > 0 and r["penalty_r2"] > 0 for r in rows)
    assert rows[0]["penalty_r1"] != rows[0]["penalty_r2"]


def test_a_pair_discriminator_is_penalised_on_both_inputs():
    from ganforge.contract.system import Judged, as_judged

    class Pair(nn.Module):  # D(x, z) = sum(x^2) + 3 sum(z): grad_x = 2x, grad_z = 3
        def forward(self, x, z):
            return x.pow(2).sum(1, keepdim=True) + 3 * z.sum(1, keepdim=True)

    x, z = torch.tensor([[1.0, 2.0]]), torch.tensor([[5.0, 6.0, 7.0]])
    assert R1()(Pair(), (x, z), None).item() == pytest.approx(0.5 * (4 * 5 + 9 * 3))
    short = as_judged((x, z))
    assert isinstance(short, Judged) and short.real[0] is x and short.fake[0] is z and short.forward is None


def test_path_length_by_hand_and_its_running_mean(precision):
    from ganforge.plugins.penalties import PathLength

    G = nn.Linear(4, 6, bias=False)
    z = torch.randn(8, 4)
    pl = PathLength(decay=0.5, shrink=2)
    torch.manual_seed(3)
    with precision.autocast(), torch.autocast("cpu", enabled=False):  # (as the engine calls it)
        value = pl(G, None, z)
    assert value.dtype == torch.float32
    torch.manual_seed(3)
    y = torch.randn(4, 6) / 6 ** 0.5
    lengths = (y @ G.weight).norm(dim=1)  # J^T y of a linear G, for the first half of the batch
    mean = 0.5 * lengths.mean()  # lerp from 0 with decay 0.5
    assert pl.mean.item() == pytest.approx(mean.item())
    assert value.item() == pytest.approx(((lengths - mean) ** 2).mean().item(), rel=1e-5)
    assert set(pl.state_dict()) == {"mean"} and pl.network_kind == "generator"


def test_path_length_trains_a_generator_resumes_exactly_and_is_refused_where_no_generator_is_penalised(tmp_path):
    from safetensors.torch import load_file

    from ganforge.errors import ConfigError
    from ganforge.contract.manager import PluginManager
    from test_reliability import _InterruptAt

    common = ["train.steps=6", "log.every=2", "penalties=[{name: r1, weight: 1}, {name: path_length, weight: 2, every: 2}]",
              "log.progress=false", "metrics=[]", "log.sample_every=0", "log.film_every=0", "log.animate=false"]
    whole = train(load_recipe("toy_grid", [f"out_dir={tmp_path / 'a'}", *common]))
    rows = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["penalty_path_length"] > 0 and r["penalty_r1"] > 0 for r in rows)
    pm = PluginManager()
    pm.register(_InterruptAt(3), name="interrupt")
    assert train(load_recipe("toy_grid", [f"out_dir={tmp_path / 'b'}", *common]), plugins=pm).step == 3
    resumed = train(load_recipe("toy_grid", [f"out_dir={tmp_path / 'b'}", "resume=auto", *common]))
    assert torch.equal(whole.penalties[1][1].mean, resumed.penalties[1][1].mean) and whole.penalties[1][1].mean > 0
    for name in ("model.G", "model.D"):
        a = load_file(str(tmp_path / "a" / "checkpoints" / "step-00000006" / f"{name}.safetensors"))
        b = load_file(str(tmp_path / "b" / "checkpoints" / "step-00000006" / f"{name}.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert (tmp_path / "a" / "checkpoints" / "step-00000006" / "penalty.1.path_length.safetensors").exists()
    with pytest.raises(ConfigError, match="penalty 'path_length' applies to generator networks, and objective "
                                          "'unconditional' penalises none in any phase among D"):
        train(load_recipe("toy_grid", [f"out_dir={tmp_path / 'c'}", "penalties=[{name: path_length, networks: [D]}]",
                                       *common[:2]]))
