"""Losses and penalties against independent formulas."""
import math

import pytest
import torch
import torch.nn.functional as F

from ganforge.errors import ConfigError

from ganforge.contract.manager import PluginManager

REG = PluginManager().registry
real = torch.tensor([2.0, -1.0, 0.5])
fake = torch.tensor([-3.0, 0.2, 1.0])


def test_bce_matches_bce_with_logits_and_the_textbook_formula(precision):
    """Under bf16 autocast D's logits arrive in bf16; the losses compute in fp32 (the guide's
    precision rule) and give the fp32 values of those logits."""
    loss = REG.build("loss", "bce")
    ones, zeros = torch.ones(3), torch.zeros(3)
    low_r, low_f = real.to(precision.dtype), fake.to(precision.dtype)
    with precision.autocast():
        d, g = loss.d_loss(low_r, low_f), loss.g_loss(low_f)
    assert d.dtype == g.dtype == torch.float32
    assert torch.allclose(d, F.binary_cross_entropy_with_logits(low_r.float(), ones)
                          + F.binary_cross_entropy_with_logits(low_f.float(), zeros))
    assert torch.allclose(g, F.binary_cross_entropy_with_logits(low_f.float(), ones))
    expected_d = F.binary_cross_entropy_with_logits(real, ones) + F.binary_cross_entropy_with_logits(fake, zeros)
    assert torch.allclose(loss.d_loss(real, fake), expected_d)
    dx, dgz = torch.sigmoid(real), torch.sigmoid(fake)
    assert torch.allclose(loss.d_loss(real, fake), (-dx.log()).mean() + (-(1 - dgz).log()).mean())
    assert torch.allclose(loss.g_loss(fake), (-dgz.log()).mean())


def test_other_losses(precision):
    with precision.autocast():
        for name in ("minimax", "hinge", "wgan", "lsgan", "relativistic", "rpgan"):
            loss = REG.build("loss", name)
            low, high = real.to(precision.dtype), fake.to(precision.dtype)
            d = loss.d_loss(low, high)
            g = loss.g_loss(high, low) if getattr(loss, "uses_real_logits", False) else loss.g_loss(high)
            assert d.dtype == g.dtype == torch.float32, name
            r32, f32 = low.float(), high.float()  # what fp32 computes on the same logits
            expected = loss.g_loss(f32, r32) if getattr(loss, "uses_real_logits", False) else loss.g_loss(f32)
            assert torch.allclose(d, loss.d_loss(r32, f32)) and torch.allclose(g, expected), name
    mm = REG.build("loss", "minimax")
    assert torch.allclose(mm.g_loss(fake), (1 - torch.sigmoid(fake)).log().mean())
    hinge = REG.build("loss", "hinge")
    assert torch.allclose(hinge.d_loss(real, fake), torch.relu(1 - real).mean() + torch.relu(1 + fake).mean())
    assert torch.allclose(hinge.g_loss(fake), -fake.mean())
    w = REG.build("loss", "wgan")
    assert torch.allclose(w.d_loss(real, fake), fake.mean() - real.mean())
    ls = REG.build("loss", "lsgan")
    assert torch.allclose(ls.d_loss(real, fake), 0.5 * ((real - 1) ** 2).mean() + 0.5 * (fake ** 2).mean())
    assert torch.allclose(ls.g_loss(fake), 0.5 * ((fake - 1) ** 2).mean())


def test_losses_are_finite_for_extreme_logits_and_under_bf16():
    big = torch.tensor([1e4, -1e4])
    for name in REG.names("loss"):
        loss = REG.build("loss", name)
        assert torch.isfinite(loss.d_loss(big, -big)) and torch.isfinite(loss.g_loss(big, -big))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert loss.d_loss(real.bfloat16(), fake.bfloat16()).dtype == torch.float32


def test_relativistic_average_loss_by_hand():
    """RaSGAN (Jolicoeur-Martineau 2018), both G terms as in the paper, against values worked
    out with math: Dr(a, b) = sigmoid(C(a) - mean C(b))."""
    loss = REG.build("loss", "relativistic")
    assert loss.uses_real_logits and loss.capturable
    real, fake = [1.0, 3.0], [0.0, -3.0]  # means 2 and -1.5

    def sig(a):
        return 1 / (1 + math.exp(-a))

    mr, mf = sum(real) / 2, sum(fake) / 2
    d = -sum(math.log(sig(r - mf)) for r in real) / 2 - sum(math.log(1 - sig(f - mr)) for f in fake) / 2
    g = -sum(math.log(sig(f - mr)) for f in fake) / 2 - sum(math.log(1 - sig(r - mf)) for r in real) / 2
    assert d == pytest.approx(0.5 * (math.log(1 + math.exp(-2.5)) + math.log(1 + math.exp(-4.5))
                                     + math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-5))))
    r_t, f_t = torch.tensor(real, dtype=torch.float64), torch.tensor(fake, dtype=torch.float64, requires_grad=True)
    assert loss.d_loss(r_t, f_t).item() == pytest.approx(d, rel=1e-6)
    value = loss.g_loss(f_t, r_t)
    assert value.item() == pytest.approx(g, rel=1e-6)
    # G learns from both terms: the real term depends on the fakes' mean
    value.backward()
    only_fake_term = torch.autograd.grad(torch.nn.functional.softplus(-(f_t - r_t.mean())).mean(), f_t)[0]
    assert not torch.allclose(f_t.grad, only_fake_term)
    with pytest.raises(ConfigError, match="needs D's logits on real data"):
        loss.g_loss(f_t)


def test_rpgan_pairs_each_fake_with_its_real_logit_by_hand(precision):
    """R3GAN's RpGAN: L_D = mean softplus(D(fake_i) - D(real_i)), L_G = mean softplus(D(real_i) -
    D(fake_i)), worked out with math; unlike RaSGAN it does not compare with batch means."""
    loss = REG.build("loss", "rpgan")
    assert loss.uses_real_logits and loss.capturable
    real, fake = [1.0, 3.0, -0.5], [0.0, -3.0, 2.0]
    d = sum(math.log1p(math.exp(f - r)) for r, f in zip(real, fake)) / 3
    g = sum(math.log1p(math.exp(r - f)) for r, f in zip(real, fake)) / 3
    with precision.autocast():
        r_t, f_t = torch.tensor(real).to(precision.dtype), torch.tensor(fake).to(precision.dtype)
        assert loss.d_loss(r_t, f_t).dtype == torch.float32
        assert loss.d_loss(r_t, f_t).item() == pytest.approx(d, rel=1e-6)  # (these values are exact in bf16)
        assert loss.g_loss(f_t, r_t).item() == pytest.approx(g, rel=1e-6)
    # pairing: permuting the fakes changes the loss (a batch-mean loss would not see it)
    assert loss.d_loss(torch.tensor(real), torch.tensor(fake[::-1])).item() != pytest.approx(d)
    maps = torch.randn(2, 1, 3, 3), torch.randn(2, 1, 3, 3)  # PatchGAN maps: paired position by position
    assert torch.allclose(loss.d_loss(*maps), F.softplus(maps[1] - maps[0]).mean())
    with pytest.raises(ConfigError, match="loss 'rpgan' needs D's logits on real data"):
        loss.g_loss(f_t)
    with pytest.raises(ConfigError, match="the two batches must be the same size"):
        loss.d_loss(torch.zeros(4), torch.zeros(3))


def test_rpgan_in_a_system_whose_g_phase_passes_no_real_logits_is_one_line(tmp_path):
    import ganforge
    from ganforge.plugins.objectives import Unconditional
    from ganforge.system import Terms, g_adversarial

    class NoReals(Unconditional):
        def g_loss(self, batch):
            z = self.noise(self._real(batch).shape[0], self._real(batch).device)
            loss, logs = g_adversarial(self.loss, self.D(self.G(z)))  # (no real=)
            return Terms(loss, logs)

    class Plugin:
        @ganforge.hookimpl
        def ganforge_register_objectives(self, register):
            register("noreals", lambda *, loss, z_dim, sample_shape, n_critic, optim: NoReals(
                loss, z_dim, sample_shape, n_critic, optim))

    pm = ganforge.PluginManager()
    pm.register(Plugin(), name="noreals")
    with pytest.raises(ConfigError) as err:
        ganforge.train("toy_grid", [f"out_dir={tmp_path}", "objective=noreals", "loss=rpgan", "train.steps=1",
                                    "log.progress=false", "metrics=[]"], plugins=pm)
    assert "needs the discriminator's logits on real data in G's phase" in str(err.value)
    assert "\n" not in str(err.value)


class Quadratic(torch.nn.Module):
    """D(x) = sum(a * x^2): grad = 2 a x, known in closed form."""

    def __init__(self, a):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(a))

    def forward(self, x):
        return (self.a * x.flatten(1) ** 2).sum(1)


def test_r1_is_half_mean_squared_gradient_norm():
    D = Quadratic(1.5)
    x = torch.randn(8, 3)
    value = REG.build("penalty", "r1")(D, x, None)
    expected = 0.5 * ((2 * 1.5 * x) ** 2).sum(1).mean()
    assert torch.allclose(value, expected)
    value.backward()  # differentiable w.r.t. D's parameters: d/da = 0.5 * mean(sum(8 a x^2))
    assert torch.allclose(D.a.grad, (0.5 * 8 * 1.5 * x ** 2).sum(1).mean())


def test_gradient_penalty_for_a_linear_critic():
    w = torch.tensor([3.0, 4.0])  # ||grad|| = 5 everywhere
    D = torch.nn.Linear(2, 1, bias=False)
    D.weight.data = w.unsqueeze(0)
    gp = REG.build("penalty", "gp")
    value = gp(D, torch.randn(6, 2), torch.randn(6, 2))
    assert value.item() == pytest.approx((5 - 1) ** 2)
    assert math.isclose(REG.build("penalty", "gp", {"target": 5.0})(D, torch.randn(2, 2), torch.randn(2, 2)).item(), 0.0, abs_tol=1e-9)
