"""Multi-output discriminators, feature matching and the loss helpers of the contract
(issue #25 items 3 and 6)."""
import json

import pytest
import torch

from ganforge.contract.recipes import load_recipe
from ganforge.training.engine import train
from ganforge.plugins.losses import BCE, Hinge, RelativisticAverage
from ganforge.plugins.translation.patchgan import MultiscalePatchGAN
from ganforge.plugins.penalties import R1
from ganforge.contract.system import Judgement, d_adversarial, feature_matching, g_adversarial, heads, logit_sum

@pytest.fixture
def digits(tmp_path):
    """MNIST-format train and test files (generated): the translation demos read both."""
    from conftest import make_mnist_like

    return make_mnist_like(make_mnist_like(tmp_path / "mnist", n=64), n=40, split="test")


QUICK = ["log.progress=false", "metrics=[]", "log.sample_every=0", "log.film_every=0", "log.animate=false"]


def test_helpers_on_one_head_equal_the_loss_itself():
    real, fake = torch.randn(8, 1), torch.randn(8, 1)
    loss, logs = d_adversarial(BCE(), real, fake)
    assert torch.equal(loss, BCE().d_loss(real, fake))
    assert torch.equal(logs["d_real"], torch.sigmoid(real).mean()) and torch.equal(logs["d_fake"], torch.sigmoid(fake).mean())
    g, g_logs = g_adversarial(Hinge(), fake, real=lambda: pytest.fail("only relativistic losses read real logits"))
    assert torch.equal(g, -fake.mean()) and torch.equal(g_logs["d_fake_g"], fake.mean())


def test_helpers_sum_losses_over_heads_and_average_the_scores():
    r = Judgement([torch.full((2, 1, 4, 4), 1.0), torch.full((2, 1, 2, 2), 3.0)])
    f = Judgement([torch.full((2, 1, 4, 4), -1.0), torch.full((2, 1, 2, 2), 0.5)])
    loss, logs = d_adversarial(Hinge(), r, f)
    assert loss.item() == pytest.approx((0 + 0) + (0 + 1.5))  # relu(1 - r) + relu(1 + f), per head
    assert logs["d_real"].item() == 2.0 and logs["d_fake"].item() == pytest.approx(-0.25)
    g, _ = g_adversarial(Hinge(), f)
    assert g.item() == pytest.approx(1.0 - 0.5)
    called = []
    g_rel, _ = g_adversarial(RelativisticAverage(), f, real=lambda: called.append(1) or r)
    parts = [RelativisticAverage().g_loss(a, b) for a, b in zip(f.logits, r.logits)]
    assert called == [1] and g_rel.item() == pytest.approx(sum(p.item() for p in parts))
    assert logit_sum(r).item() == 2 * 16 * 1.0 + 2 * 4 * 3.0 and heads(r) == r.logits


def test_feature_matching_is_the_summed_mean_absolute_difference():
    real = Judgement([torch.zeros(1)], [[torch.zeros(2, 3), torch.ones(4)], [torch.full((5,), 2.0)]])
    fake = Judgement([torch.zeros(1)], [[torch.ones(2, 3), torch.ones(4)], [torch.full((5,), -1.0, requires_grad=True)]])
    value = feature_matching(real, fake)
    assert value.item() == pytest.approx(1.0 + 0.0 + 3.0)
    value.backward()
    assert fake.features[1][0].grad is not None
    with pytest.raises(ValueError, match="feature matching needs"):
        feature_matching(Judgement([torch.zeros(1)]), fake)
    # pix2pixHD's weighting (issue #35: it was 3x too strong with 3 scales): 1 / num_D per
    # discriminator and 4 / its feature layers per layer
    hd = feature_matching(real, fake, pix2pixhd=True)
    assert hd.item() == pytest.approx(0.5 * (4 / 2 * (1.0 + 0.0) + 4 / 1 * 3.0))


def test_multiscale_patchgan_judges_each_scale_and_returns_features():
    D = MultiscalePatchGAN((6, 32, 32), ndf=4, n_layers=1, norm="none", scales=3)
    out = D(torch.randn(2, 6, 32, 32))
    assert [tuple(h.shape) for h in out.logits] == [(2, 1, 14, 14), (2, 1, 6, 6), (2, 1, 2, 2)]
    assert [len(f) for f in out.features] == [2, 2, 2] and out.features[1][0].shape == (2, 4, 8, 8)
    with pytest.raises(ValueError, match="scale 2 of 3 sees images of 8 pixels, too small for n_layers=2"):
        MultiscalePatchGAN((6, 32, 32), n_layers=2, scales=3)
    x = torch.randn(3, 6, 32, 32)
    assert R1()(D, x, x).item() > 0  # a gradient penalty through every head


def test_pix2pix_with_multiscale_d_and_feature_matching_trains(tmp_path, digits):
    common = [f"data.root={digits}", "generator.args={ngf: 4}", "train.steps=3", "log.every=1",
              "discriminator={name: multiscale_patchgan, args: {ndf: 4, n_layers: 1, scales: 2}}", *QUICK]
    state = train(load_recipe("mnist_edges_pix2pix", [f"out_dir={tmp_path / 'a'}", "objective.args.feature_weight=10",
                                                      "penalties=[{name: r1, weight: 1}]", "loss=relativistic", *common]))
    rows = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert state.step == 3 and all(r["g_feat"] > 0 and r["penalty_r1"] > 0 and "d_fake_g" in r for r in rows)
    with pytest.raises(Exception, match="feature_weight needs a discriminator that returns its features"):
        train(load_recipe("mnist_edges_pix2pix", [f"out_dir={tmp_path / 'b'}", "objective.args.feature_weight=10",
                                                  f"data.root={digits}", "discriminator.args={ndf: 4, n_layers: 1}",
                                                  "generator.args={ngf: 4}", *QUICK]))


def test_cyclegan_trains_with_the_relativistic_loss(tmp_path, digits):
    """G's adversarial term in one place (the contract's helper): every built-in system takes a
    relativistic loss (cyclegan could not; acgan's is tested in test_objectives)."""
    train(load_recipe("mnist_thick_cyclegan", [f"out_dir={tmp_path / 'c'}", f"data.root={digits}", "loss=relativistic",
                                               "generator.args={ngf: 4, blocks: 1}", "discriminator.args={ndf: 4, n_layers: 1}",
                                               "train.steps=2", "log.every=1", *QUICK]))
    rows = [json.loads(line) for line in (tmp_path / "c" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["loss_g"] == r["loss_g"] for r in rows)
