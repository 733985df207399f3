"""The InfoGAN objective: its latent code, its losses and its checks."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ganforge.errors import ConfigError
from ganforge.contract.manager import PluginManager

REG = PluginManager().registry
SHAPE = (1, 28, 28)


def _parts(codes=10, d_codes=10, z_dim=16):
    """The InfoGAN system and its networks, built as the engine builds them."""
    from ganforge.training.build import build_networks, build_system
    from ganforge.contract.recipes import load_recipe

    recipe = load_recipe(None, [
        f"train.z_dim={z_dim}", "generator={name: dcgan, args: {ngf: 8}}",
        f"discriminator={{name: dcgan, args: {{ndf: 8, norm: none, codes: {d_codes}}}}}",
        f"objective={{name: infogan, args: {{codes: {codes}}}}}"])
    obj = build_system(recipe, REG, SHAPE)
    nets = build_networks(recipe, REG, obj)
    obj.setup(nets)
    return nets["G"], nets["D"], obj.loss, obj


def test_noise_is_gaussian_then_a_uniform_one_hot_code():
    _, _, _, obj = _parts()
    noise = obj.noise(20000, "cpu", torch.Generator().manual_seed(0))
    assert noise.shape == (20000, 16)
    z, onehot = noise[:, :6], noise[:, 6:]
    assert set(onehot.unique().tolist()) == {0.0, 1.0} and torch.equal(onehot.sum(1), torch.ones(20000))
    assert torch.equal(obj.code(noise), onehot.argmax(1))
    counts = torch.bincount(obj.code(noise), minlength=10).float() / 20000
    assert (counts - 0.1).abs().max() < 0.01  # uniform over the 10 codes
    assert abs(z.mean().item()) < 0.02 and abs(z.std().item() - 1) < 0.02


def test_grid_noise_gives_each_row_one_noise_vector_and_every_code_in_turn():
    """As in the paper's figures: the code changes along a row, the Gaussian part only
    between rows; a grid of 25 is two full rows and half a row."""
    _, _, _, obj = _parts()
    grid = obj.grid_noise(25, "cpu", torch.Generator().manual_seed(0))
    assert grid.shape == (25, 16) and obj.grid_nrow == 10
    assert obj.code(grid).tolist() == list(range(10)) * 2 + list(range(5))
    z = grid[:, :6]
    for row in range(3):
        block = z[row * 10:row * 10 + 10]
        assert torch.equal(block, block[:1].expand_as(block))
    assert not torch.equal(z[0], z[10]) and not torch.equal(z[10], z[20])


def test_losses_are_the_gan_losses_plus_the_code_cross_entropy(precision):
    """By hand, in fp32 and under bf16 autocast (the same networks' outputs, the terms in fp32)."""
    G, D, loss, obj = _parts()
    real = torch.rand(8, *SHAPE) * 2 - 1
    with precision.autocast():
        torch.manual_seed(3)
        d = obj.d_loss(real)
        torch.manual_seed(3)
        z = obj.noise(8)
        fake = G(z).detach()
        logits_fake, q = D(fake, codes=True)
        real_logits = D(real)
    ce = F.cross_entropy(q.float(), obj.code(z))
    expected = loss.d_loss(real_logits.float(), logits_fake.float()) + ce
    assert d.loss.dtype == torch.float32
    assert torch.allclose(d.loss, expected) and torch.allclose(d.logs["info_ce"], ce)
    assert ce > 1.0  # an untrained Q head: about log(10)

    with precision.autocast():
        torch.manual_seed(4)
        g = obj.g_loss(real).loss
        torch.manual_seed(4)
        z = obj.noise(8)
        logits_fake, q = D(G(z), codes=True)
    assert torch.allclose(g, loss.g_loss(logits_fake.float()) + F.cross_entropy(q.float(), obj.code(z)))


def test_generator_and_code_head_learn_a_readable_code():
    """Alternating D and G steps (D frozen in G's): Q's cross-entropy falls from chance
    (log 10 = 2.3) to well below it, so both Q and G get the code term's gradients."""
    G, D, _, obj = _parts()
    torch.manual_seed(0)
    opt_d, opt_g = torch.optim.Adam(D.parameters(), 1e-3), torch.optim.Adam(G.parameters(), 1e-3)
    real = torch.rand(64, *SHAPE) * 2 - 1
    ce = []
    for _ in range(80):
        d = obj.d_loss(real)
        opt_d.zero_grad()
        d.loss.backward()
        opt_d.step()
        ce.append(d.logs["info_ce"].item())
        D.requires_grad_(False)
        g = obj.g_loss(real).loss
        opt_g.zero_grad()
        g.backward()
        opt_g.step()
        D.requires_grad_(True)
    assert ce[0] > 2.0 and max(ce[-5:]) < 1.0


@pytest.mark.parametrize("codes, d_codes, message", [
    (10, 0, "needs a discriminator with a 10-way code head: set discriminator.args.codes=10"),
    (10, 5, "needs a discriminator with a 10-way code head"),
    (16, 16, r"codes must be between 2 and z_dim - 1 \(train.z_dim=16\), got 16"),
])
def test_misconfigured_codes_are_clear_errors(codes, d_codes, message):
    with pytest.raises(ConfigError, match=f"objective 'infogan'.*: {message}"):
        _parts(codes, d_codes)


def test_mnist_infogan_recipe_trains_with_its_code(tmp_path, mnist_dir):
    """The shipped recipe, 4 steps on generated MNIST-format files: its parts are built as
    written, the code's cross-entropy is logged and the run's checkpoint samples again."""
    from ganforge.run.loading import load_for_sampling as _load_for_sampling
    from ganforge.contract.recipes import load_recipe
    from ganforge.training.engine import train
    from ganforge.plugins.objectives import InfoGAN

    state = train(load_recipe("mnist_infogan", [
        f"out_dir={tmp_path}", f"data.root={mnist_dir}", "train.steps=4", "log.every=2",
        "log.progress=false", "metrics=[]", "log.sample_every=0", "data.batch_size=16"]))
    assert isinstance(state.objective, InfoGAN) and state.objective.codes == 10
    assert state.discriminator.q.out_features == 10
    rows = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(0 < r["info_ce"] < 5 for r in rows if "info_ce" in r) and any("info_ce" in r for r in rows)
    nets, objective, _, _ = _load_for_sampling(tmp_path, True)
    noise = objective.noise(10, "cpu", torch.Generator().manual_seed(0))
    assert objective.generate(nets, noise).shape == (10, *SHAPE)
    # pictures are laid out by code, 10 columns of 28 + 2 padding pixels: the training grid
    # (64 samples: 7 rows) and `ganforge sample`'s
    from ganforge.cli import main

    assert Image.open(tmp_path / "samples-final.png").size == (10 * 30 + 2, 7 * 30 + 2)
    assert main(["sample", str(tmp_path), "--out", str(tmp_path / "grid.png"), "--n", "25"]) == 0
    assert Image.open(tmp_path / "grid.png").size == (10 * 30 + 2, 3 * 30 + 2)
    # saved arrays are independent draws from noise(), fit for metrics computed elsewhere
    assert main(["sample", str(tmp_path), "--out", str(tmp_path / "s.npz"), "--n", "12"]) == 0
    with torch.no_grad():
        expected = objective.generate(nets, objective.noise(12, "cpu", torch.Generator().manual_seed(0)))
    assert np.allclose(np.load(tmp_path / "s.npz")["samples"], expected.numpy(), atol=1e-6)
