"""EMA (issue #25 item 8): StyleGAN2-ADA's ramp-up by hand, buffers copied, both steps alike."""
import math

import pytest
import torch

from ganforge.contract.recipes import load_recipe
from ganforge.training.ema import decay
from ganforge.training.engine import train

QUICK = ["log.progress=false", "metrics=[]", "log.sample_every=0", "log.film_every=0", "log.animate=false"]


def test_rampup_by_hand():
    half_life = 64 * math.log(0.5) / math.log(0.999)  # 44,340 images
    assert decay(0.999, 0.0, 5, 64) == 0.999  # no ramp-up: the decay as set
    assert decay(0.999, 0.05, 100, 64) == pytest.approx(0.5 ** (64 / (100 * 64 * 0.05)))  # 0.8706
    assert decay(0.999, 0.05, 20000, 64) == pytest.approx(0.999)  # 64,000 images x 0.05 > the half-life
    assert decay(0.999, 0.05, int(half_life / 64 / 0.05) + 1, 64) == pytest.approx(0.999)
    assert decay(0.999, 0.05, 0, 64) == 0.0  # the first update copies
    steps = torch.tensor([0.0, 100.0, 20000.0])
    assert torch.allclose(decay(0.999, 0.05, steps, 64).double(),
                          torch.tensor([decay(0.999, 0.05, s, 64) for s in (0, 100, 20000)], dtype=torch.float64))


def test_buffers_are_copied_and_parameters_averaged(tmp_path, mnist_dir):
    state = train(load_recipe("mnist_dcgan", [f"out_dir={tmp_path}", f"data.root={mnist_dir}", "data.batch_size=16",
                                              "generator.args.ngf=4", "discriminator.args.ndf=4", "train.steps=4",
                                              "train.ema=0.9", "train.ema_rampup=0.05", *QUICK]))
    ema, G = state.emas["G"].module, state.accelerator.unwrap_model(state.nets["G"])
    buffers = dict(G.named_buffers())
    assert any("running_mean" in k for k in buffers)
    for k, b in ema.named_buffers():
        assert torch.equal(b, buffers[k]), k
    params = dict(G.named_parameters())
    assert any(not torch.equal(p, params[k]) for k, p in ema.named_parameters())
    assert int(state.emas["G"].n_averaged) == 4


def test_bad_rampup_is_one_line(tmp_path):
    with pytest.raises(Exception, match="train.ema_rampup caps the EMA's half-life"):
        load_recipe("toy_grid", ["train.ema_rampup=-1"])
