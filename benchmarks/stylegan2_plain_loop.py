"""StyleGAN2 on MNIST in a plain loop, outside ganforge's engine: the diagnosis of
`mnist_stylegan2`'s collapse (RESULTS "StyleGAN2 and R3GAN").

    OMP_NUM_THREADS=1 python benchmarks/stylegan2_plain_loop.py --steps 1000 --out runs/plain/a.jsonl
    OMP_NUM_THREADS=1 python benchmarks/stylegan2_plain_loop.py --generator dcgan --out runs/plain/dcgan.jsonl

The loop is stylegan2-ada-pytorch's ``training_loop`` with ``StyleGAN2Loss`` written out on
ganforge's networks (``plugins/image/stylegan2.py``): per step the phases Gmain, Greg (path length on
w, half the batch, every 4), Dmain, Dreg (R1, every 16), each network with one Adam stepped in its
main and its regularisation phase (gain = the interval), learning rate and betas corrected by
interval / (interval + 1); style mixing; EMA with the 10 kimg half-life and the 0.05 ramp-up. No
ganforge engine code runs: a collapse here is not the engine's. ``--generator dcgan`` swaps in
ganforge's DCGAN generator (BatchNorm, tanh; no mixing, no path length) against the same
discriminator and loop (``dcgan_nobn``: without its BatchNorm layers). The session-17 diagnoses
change one part of the StyleGAN2 generator each: ``--input latent`` (a per-sample 4x4 input),
``--styles const`` (no style modulation), ``--g-arch orig`` (no skip outputs), ``--demod off``,
``--noise none``; ``--d-arch orig`` is D's. Every ``--every`` steps it scores 2,000 EMA samples with the ``mnist``
metric (classifier score, FD) and writes a JSON line and a sample grid beside ``--out``.
"""
from __future__ import annotations

import argparse
import copy
import functools
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision

from ganforge.plugins.image.dcgan import dcgan_generator
from ganforge.plugins.image.idx import mnist
from ganforge.plugins.image.mnist_metrics import mnist_metric
import ganforge.plugins.image.stylegan2 as sg2_module
from ganforge.plugins.image.stylegan2 import Discriminator, FullyConnected, Generator, SynthesisBlock

ROOT = Path(__file__).resolve().parent.parent


class LatentInputBlock(SynthesisBlock):
    """The 4x4 block with a per-sample input: its constant plus a fully connected projection of
    the block's first w (equalized lr, weights N(0, 1)), so that the spatial layout depends on z
    directly, as a DCGAN generator's does."""

    def forward(self, x, img, ws, noise_mode, noise=None):
        take = (lambda: next(noise)) if noise is not None else (lambda: None)
        x = self.const[None].to(ws.dtype) + self.from_w(ws[:, 0]).view(-1, *self.const.shape)
        x = self.conv1(x, ws[:, 0], noise_mode, take())
        return x, self.torgb(x, ws[:, 1])


class ConstStyle(torch.nn.Module):
    """A style that ignores w: a learned vector (initialised to 1, as the affine layers' bias)."""

    def __init__(self, n: int):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.ones(n))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.bias.to(w.dtype).expand(w.shape[0], -1)


def no_demodulation(modulated_conv2d, x, weight, styles, demodulate=True, padding=1, fused=True):
    return modulated_conv2d(x, weight, styles, False, padding, fused)


class ZeroRGB(torch.nn.Module):
    """A ToRGB that adds nothing: with it below the last resolution, the image is the last's."""

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x.shape[0], 1, *x.shape[2:])


def latent_input(block: SynthesisBlock, w_dim: int) -> None:
    block.from_w = FullyConnected(w_dim, block.const.numel())
    block.__class__ = LatentInputBlock


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default=str(ROOT.parent / "shared" / "data" / "mnist"))
    p.add_argument("--out", required=True, help="the JSON lines file; grids beside it")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--every", type=int, default=250)
    p.add_argument("--precision", choices=("bf16", "no"), default="bf16")
    p.add_argument("--generator", choices=("stylegan2", "dcgan", "dcgan_nobn"), default="stylegan2",
                   help="dcgan_nobn: the DCGAN generator with its BatchNorm layers removed")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.0025)
    p.add_argument("--lr-d", type=float, default=None, help="D's learning rate (default: --lr)")
    p.add_argument("--gamma", type=float, default=0.01, help="R1 gamma (every 16 D steps)")
    p.add_argument("--pl", type=float, default=2.0, help="path length weight (every 4 G steps)")
    p.add_argument("--mix", type=float, default=0.9, help="style mixing probability")
    p.add_argument("--fmaps", type=float, default=0.0625)
    p.add_argument("--channel-max", type=int, default=64, help="D's, and G's unless --g-channel-max")
    p.add_argument("--g-channel-max", type=int, default=None)
    p.add_argument("--map", type=int, default=2)
    p.add_argument("--w-dim", type=int, default=128)
    p.add_argument("--mbstd", type=int, default=4)
    p.add_argument("--input", choices=("const", "latent"), default="const",
                   help="G's 4x4 input: StyleGAN2's learned constant, or (a diagnosis, not StyleGAN2) "
                        "the constant plus a projection of the first w, as lucidrains' no_const")
    p.add_argument("--styles", choices=("w", "const"), default="w",
                   help="const: every layer's style a learned vector, the same for all samples (a "
                        "diagnosis: with --input latent, z enters only at the 4x4 input)")
    p.add_argument("--g-arch", choices=("skip", "orig"), default="skip",
                   help="orig: the image from the last resolution's ToRGB alone (the reference's "
                        "architecture='orig'), not the sum of every resolution's")
    p.add_argument("--demod", choices=("on", "off"), default="on",
                   help="off: the synthesis layers' convolutions without demodulation")
    p.add_argument("--noise", choices=("random", "const", "none"), default="random", help="G's per-layer noise")
    p.add_argument("--d-arch", choices=("resnet", "orig"), default="resnet",
                   help="D's blocks (the cifar config uses orig, with no path length and no mixing)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    if a.styles == "const" and a.input != "latent":
        p.error("--styles const needs --input latent: with constant styles and a constant input, z reaches nothing")
    torch.manual_seed(a.seed)
    out_path = Path(a.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    ds = mnist(root=a.root, download=False, pad=2)
    data = ds.data.float().div(127.5).sub(1)
    metric = mnist_metric(dataset=ds, n_real=2000)
    z_dim, b = 128, a.batch
    if a.generator.startswith("dcgan"):
        G = dcgan_generator(z_dim=z_dim, out_shape=(1, 32, 32), ngf=32)
        a.pl, a.mix = 0.0, 0.0
        if a.generator == "dcgan_nobn":
            for module in G.modules():
                for name, child in module.named_children():
                    if isinstance(child, torch.nn.BatchNorm2d):
                        setattr(module, name, torch.nn.Identity())
    else:
        G = Generator(z_dim, (1, 32, 32), None, w_dim=a.w_dim, map=a.map, fmaps=a.fmaps,
                      channel_max=a.g_channel_max or a.channel_max, noise_mode=a.noise)
        if a.input == "latent":
            latent_input(G.synthesis.blocks[0], a.w_dim)
        if a.demod == "off":
            sg2_module.modulated_conv2d = functools.partial(no_demodulation, sg2_module.modulated_conv2d)
        if a.g_arch == "orig":
            for block in G.synthesis.blocks[:-1]:
                block.torgb = ZeroRGB()
        if a.styles == "const":
            for module in G.synthesis.modules():
                if hasattr(module, "affine"):
                    module.affine = ConstStyle(module.affine.bias.numel())
    D = Discriminator((1, 32, 32), None, fmaps=a.fmaps, channel_max=a.channel_max, mbstd_group=a.mbstd,
                      architecture=a.d_arch)
    G_ema = copy.deepcopy(G).eval()

    def adam(module, interval, lr):
        r = interval / (interval + 1)
        return torch.optim.Adam(module.parameters(), lr=lr * r, betas=(0.0, 0.99 ** r), eps=1e-8)

    opt_g, opt_d = adam(G, 4, a.lr), adam(D, 16, a.lr_d or a.lr)
    pl_mean = torch.zeros([])
    autocast = lambda: torch.autocast("cpu", torch.bfloat16, enabled=a.precision == "bf16")  # noqa: E731

    def run_g(z):
        if a.generator.startswith("dcgan"):
            return G(z), None
        ws = G.mapping(z, None, update_w_avg=True)
        if a.mix > 0:  # StyleGAN2Loss.run_G's mixing
            cutoff = torch.empty([], dtype=torch.int64).random_(1, ws.shape[1])
            cutoff = torch.where(torch.rand([]) < a.mix, cutoff, torch.full_like(cutoff, ws.shape[1]))
            ws = ws.clone()
            ws[:, cutoff:] = G.mapping(torch.randn_like(z), None)[:, cutoff:]
        return G.synthesis(ws, a.noise), ws

    log = out_path.open("w")
    start = time.time()
    for step in range(1, a.steps + 1):
        real = data[torch.randint(len(data), (b,))]
        G.requires_grad_(True)
        D.requires_grad_(False)
        opt_g.zero_grad(set_to_none=True)  # Gmain
        with autocast():
            img, _ = run_g(torch.randn(b, z_dim))
            loss_g = F.softplus(-D(img).float()).mean()
        loss_g.backward()
        opt_g.step()
        if a.pl and (step - 1) % 4 == 0:  # Greg: path length on w
            opt_g.zero_grad(set_to_none=True)
            with autocast():
                img, ws = run_g(torch.randn(b // 2, z_dim))
                y = torch.randn_like(img.float()) / math.sqrt(img.shape[2] * img.shape[3])
                (grad,) = torch.autograd.grad((img.float() * y).sum(), ws, create_graph=True)
                lengths = grad.float().square().sum(2).mean(1).sqrt()
                pl_mean = pl_mean.lerp(lengths.mean().detach(), 0.01)
                penalty = (lengths - pl_mean).square() * a.pl
            (img[:, 0, 0, 0].float() * 0 + penalty).mean().mul(4).backward()
            opt_g.step()
        G.requires_grad_(False)
        D.requires_grad_(True)
        opt_d.zero_grad(set_to_none=True)  # Dmain
        with autocast():
            with torch.no_grad():
                img, _ = run_g(torch.randn(b, z_dim))
            loss_d = F.softplus(D(img).float()).mean() + F.softplus(-D(real).float()).mean()
        loss_d.backward()
        opt_d.step()
        if a.gamma and (step - 1) % 16 == 0:  # Dreg: R1
            opt_d.zero_grad(set_to_none=True)
            x = real.detach().requires_grad_(True)
            with autocast():
                logits = D(x)
                (grad,) = torch.autograd.grad(logits.float().sum(), x, create_graph=True)
                penalty = grad.float().square().sum([1, 2, 3]) * (a.gamma / 2)
            (logits[:, 0].float() * 0 + penalty).mean().mul(16).backward()
            opt_d.step()
        beta = 0.5 ** (b / max(min(10_000, step * b * 0.05), 1e-8))  # EMA: 10 kimg, ramp-up 0.05
        with torch.no_grad():
            for e, m in zip(G_ema.parameters(), G.parameters()):
                e.copy_(m.lerp(e, beta))
            for e, m in zip(G_ema.buffers(), G.buffers()):
                e.copy_(m)
        if step % a.every == 0:
            with torch.no_grad(), autocast():
                zs = torch.randn(2000, z_dim, generator=torch.Generator().manual_seed(1))
                samples = torch.cat([G_ema(z).float() for z in zs.split(250)])
            m = metric(samples)
            row = {"step": step, "kimg": step * b / 1000, "minutes": round((time.time() - start) / 60, 2),
                   "classifier_score": m["classifier_score"], "frechet_distance": m["frechet_distance"],
                   "recall": m["recall"], "loss_d": float(loss_d.detach()), "loss_g": float(loss_g.detach()),
                   "image_std_over_z": float(samples.std(0).mean())}
            print(json.dumps(row), flush=True)
            log.write(json.dumps(row) + "\n")
            log.flush()
            torchvision.utils.save_image(samples[:64] * 0.5 + 0.5, out_path.with_name(f"{out_path.stem}-{step}.png"),
                                         nrow=8)


if __name__ == "__main__":
    main()
