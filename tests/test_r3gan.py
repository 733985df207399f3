"""R3GAN's networks (issue #36): fix-up initialisation, MSR gains, bilinear resampling by hand,
fp32 outputs under bf16, and its recipe training with rpgan + R1 + R2 and the ramps."""
import math

import pytest
import torch

import ganforge
from ganforge.plugins.image.r3gan import (GAIN, ResidualBlock, downsample, r3gan_discriminator, r3gan_generator,
                                          upsample)

QUICK = ["log.progress=false", "log.sample_every=0", "log.film_every=0", "log.animate=false", "metrics=[]"]


def test_every_block_starts_as_the_identity_with_msr_gains():
    torch.manual_seed(0)
    block = ResidualBlock(16, cardinality=4, expansion=2, blocks_total=8)
    x = torch.randn(2, 16, 8, 8)
    assert torch.equal(block(x), x)  # fix-up: the last 1x1 convolution is zero
    assert torch.count_nonzero(block.conv3.weight) == 0
    gain = GAIN * 8 ** (-1 / 4)  # 3 linear layers per block: L^(-1 / (2 * 3 - 2))
    assert block.conv1.weight.std().item() == pytest.approx(gain / math.sqrt(16), rel=0.1)
    assert block.conv2.weight.std().item() == pytest.approx(gain / math.sqrt(8 * 9), rel=0.1)  # 32 / 4 groups
    with pytest.raises(ValueError, match="cardinality 5 must divide the expanded width 32"):
        ResidualBlock(16, cardinality=5, expansion=2, blocks_total=1)


def test_bilinear_resampling_by_hand():
    """R3GAN's resamplers use [1, 2, 1] convolved with [1, 1]: [1, 3, 3, 1]. Upsampling is
    bilinear (3/4 of the nearer input, 1/4 of the farther, per axis), symmetric at the borders;
    downsampling is its transpose. (A [1, 2, 1] filter made a period-2 pattern of lines.)"""
    x = torch.tensor([[1.0, 3.0], [5.0, 7.0]])[None, None]
    up = upsample(x)[0, 0]
    K = torch.tensor([[0.75, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 0.75]])  # per axis, zero beyond
    assert up.shape == (4, 4) and torch.allclose(up, K @ x[0, 0] @ K.t())
    assert torch.allclose(up[1:3, 1:3], torch.tensor([[2.5, 3.5], [4.5, 5.5]]))  # interior: bilinear
    noise = upsample(torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(0)))[0, 0, 2:-2, 2:-2]
    even, odd = noise[::2].var().item(), noise[1::2].var().item()
    assert even == pytest.approx(odd, rel=0.05)  # no row pattern
    flat = torch.ones(1, 1, 8, 8)
    down = downsample(flat)[0, 0]
    assert down.shape == (4, 4) and torch.allclose(down[1:-1, 1:-1], torch.ones(2, 2))  # weights sum to 1
    assert torch.allclose(down, down.flip(0)) and torch.allclose(down, down.flip(1))  # symmetric borders
    y = torch.randn(1, 1, 8, 8)
    assert torch.allclose((downsample(y) * x.repeat(1, 1, 2, 2)).sum(), (y * upsample(x.repeat(1, 1, 2, 2))).sum() / 4,
                          atol=1e-5)  # the transpose, up to the gain 4
    # in bf16 (G and D run their convolutions in the autocast dtype): the filter's taps (k/64) are
    # exact, so the same bilinear values, in bf16
    up16 = upsample(x.bfloat16())[0, 0]
    assert up16.dtype == torch.bfloat16 and torch.equal(up16.float(), K @ x[0, 0] @ K.t())
    assert torch.equal(downsample(flat.bfloat16())[0, 0].float(), down)


def test_shapes_conditioning_and_fp32_outputs_under_bf16(precision):
    G = r3gan_generator(z_dim=8, out_shape=(3, 16, 16), num_classes=4, width=8, cardinality=2, blocks=1)
    D = r3gan_discriminator(in_shape=(3, 16, 16), num_classes=4, width=8, cardinality=2, blocks=1)
    z, y = torch.randn(3, 8), torch.tensor([0, 1, 3])
    with precision.autocast():
        x = G(z, y)
        logits = D(x, y)
    assert x.shape == (3, 3, 16, 16) and x.dtype == torch.float32
    assert logits.shape == (3, 1) and logits.dtype == torch.float32
    assert not torch.allclose(D(x, y), D(x, torch.tensor([2, 2, 2])))  # projected on the class's embedding
    with pytest.raises(ValueError, match="widths: 3 stages"):
        r3gan_generator(z_dim=8, out_shape=(3, 16, 16), widths=[8, 8])
    with pytest.raises(ValueError, match="power-of-two image size >= 8, got 28"):
        r3gan_discriminator(in_shape=(1, 28, 28))


def test_mnist_r3gan_trains_with_rpgan_r1_r2_and_its_ramps(tmp_path, mnist_dir):
    state = ganforge.train("mnist_r3gan", [f"data.root={mnist_dir}", "train.steps=3", "data.batch_size=8",
                                           "generator.args={width: 8, cardinality: 2, blocks: 1}",
                                           "discriminator.args={width: 8, cardinality: 2, blocks: 1}",
                                           "log.every=1", f"out_dir={tmp_path}", *QUICK])
    assert state.step == 3 and type(state.system.loss).__name__ == "RelativisticPaired"
    rows = [r for r in map(__import__("json").loads, (tmp_path / "metrics.jsonl").read_text().splitlines())
            if "penalty_r1" in r]
    assert len(rows) == 3 and all(r["penalty_r2"] >= 0 for r in rows)
    beta2 = state.optimizers["G"].param_groups[0]["betas"][1]
    assert 0.9 < beta2 <= 0.99  # (the ramp has moved from its initial 0.9)
