"""The built-in penalties against hand-computed values (a linear and a quadratic D)."""
import json

import pytest
import torch
from torch import nn

from ganforge.config import load_recipe
from ganforge.engine import train
from ganforge.plugins.penalties import R1, R2, GradientPenalty


class Quadratic(nn.Module):
    """D(x) = sum(x^2) per sample: grad_x D = 2x, so each penalty has a closed form."""

    def forward(self, x):
        return x.pow(2).sum(1, keepdim=True)


def test_r1_r2_and_gp_by_hand():
    real = torch.tensor([[1.0, 2.0], [0.0, 3.0]])
    fake = torch.tensor([[0.5, 0.0], [2.0, 2.0]])
    D = Quadratic()
    assert R1()(D, real, fake).item() == pytest.approx(0.5 * (4 * 5 + 4 * 9) / 2)  # on reals only
    assert R2()(D, real, fake).item() == pytest.approx(0.5 * (4 * 0.25 + 4 * 8) / 2)  # on fakes only
    linear = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[3.0, 4.0]]))  # ||grad|| = 5 everywhere
    assert GradientPenalty()(linear, real, fake).item() == pytest.approx(16.0)
    assert R2()(linear, real, fake).item() == pytest.approx(12.5)


def test_r1_and_r2_together_train_and_log_both(tmp_path):
    state = train(load_recipe("toy_grid", [f"out_dir={tmp_path}", "train.steps=4", "log.every=2", "loss=relativistic",
                                           "penalties=[{name: r1, weight: 1}, {name: r2, weight: 1}]",
                                           "log.progress=false", "metrics=[]", "log.sample_every=0"]))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert state.step == 4 and all(r["penalty_r1"] > 0 and r["penalty_r2"] > 0 for r in rows)
    assert rows[0]["penalty_r1"] != rows[0]["penalty_r2"]
