"""VQGAN's first stage (Esser et al. 2021, "Taming Transformers for High-Resolution Image
Synthesis", section 3.2): an image autoencoder with a vector-quantised latent, the first stage
of latent generative models.

Four networks, each its own part, so that a recipe sets any of them (``networks.E: {args:
{width: 64}}``):

- ``E`` (kind ``encoder``, default ``vq_encoder``): image -> ``z_e``, ``code_dim`` channels at
  1 / 2^``downs`` of the image's side;
- ``Q`` (kind ``quantizer``, default ``vector_quantizer``): the codebook; each position of
  ``z_e`` is replaced by its nearest code (``Quantized(z, indices, loss)``, with the
  straight-through gradient and the codebook + ``beta`` x commitment loss of VQ-VAE);
- ``G`` (kind ``decoder``, default ``vq_decoder``): quantised codes -> image; its last
  convolution ``conv_out`` is where the adaptive weight is measured;
- ``D`` (a discriminator, default ``patchgan`` with ``n_layers: 2``, VQGAN's PatchGAN).

One training step: phase ``G`` (optimizer ``G`` over E, Q and G) minimises
``l1_weight`` x L1(x, x^) + the codebook loss + lambda x ``disc_weight`` x G's adversarial
term, where lambda = |grad L_rec| / (|grad L_adv| + 1e-4) at ``G``'s ``adaptive_layer``,
clamped to [0, 1e4] and detached (VQGAN's eq. 7); phase ``D`` (optimizer ``D``, on the same
batch) judges x against the reconstruction kept from phase ``G``. Phase ``D`` starts at step
``disc_start`` (VQGAN's ``disc_start``; ``phases.D.start`` in a recipe); before it, G's loss
leaves the adversarial term out (:meth:`GANSystem.runs`).

Not in it: VQGAN's perceptual (LPIPS) term, whose VGG weights cannot be downloaded here;
``l1_weight`` carries the reconstruction alone. The recipe's ``loss`` is the adversarial loss
(VQGAN: ``hinge``).

Numerics under autocast: the quantizer's distances, code choice and losses, the L1 term and
the adaptive weight's gradient norms are computed in fp32 (``tests/test_vqgan.py`` checks them
under bf16).

Samples (``ganforge sample``, the training's grids, evaluations) are reconstructions of the
dataset's held-out images (:func:`ganforge.data.held_out_images`); the ``reconstruction`` metric compares
them with those images. From Python: ``run.encode(images)`` gives the code indices,
``run.decode(indices)`` the images.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ganforge import hookimpl
from ganforge.data import held_out_images
from ganforge.plugins.objectives import Unconditional
from ganforge.system import GANSystem, Judged, Network, Optimizer, Phase, Terms, d_adversarial, g_adversarial

__all__ = ["Quantized", "VQDecoder", "VQEncoder", "VQGAN", "VectorQuantizer"]


# ------------------------------------------------------------------------------ networks
def _groups(channels: int) -> int:
    """GroupNorm's groups: 32 as VQGAN, or the largest divisor of ``channels`` below it."""
    return next(g for g in range(min(32, channels), 0, -1) if channels % g == 0)


class ResBlock(nn.Module):
    """GroupNorm, SiLU, 3x3 convolution, twice, plus the input (a 1x1 convolution when the widths differ)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.body = nn.Sequential(nn.GroupNorm(_groups(c_in), c_in), nn.SiLU(), nn.Conv2d(c_in, c_out, 3, 1, 1),
                                  nn.GroupNorm(_groups(c_out), c_out), nn.SiLU(), nn.Conv2d(c_out, c_out, 3, 1, 1))
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


def _widths(width: int, downs: int, channel_max: int) -> list[int]:
    return [min(width * 2 ** i, channel_max) for i in range(downs + 1)]


def _check_shape(shape: Sequence[int], downs: int, what: str) -> None:
    if len(shape) != 3:
        raise ValueError(f"{what} works on images (C, H, W), got samples of shape {tuple(shape)}")
    if downs < 0:
        raise ValueError(f"downs is a number of halvings >= 0, got {downs}")
    if shape[1] % 2 ** downs or shape[2] % 2 ** downs:
        raise ValueError(f"{downs} halvings need image sides divisible by {2 ** downs}, got "
                         f"{shape[1]}x{shape[2]}; lower downs")


class VQEncoder(nn.Module):
    """Image -> ``z_e`` (N, code_dim, H / 2^downs, W / 2^downs): a 3x3 convolution, then per
    level a residual block and a stride-2 3x3 convolution, a residual block at the bottom."""

    def __init__(self, in_shape: Sequence[int], code_dim: int, width: int = 32, downs: int = 2, channel_max: int = 256):
        super().__init__()
        _check_shape(in_shape, downs, "vq_encoder")
        widths = _widths(width, downs, channel_max)
        layers: list[nn.Module] = [nn.Conv2d(in_shape[0], widths[0], 3, 1, 1)]
        for a, b in zip(widths, widths[1:]):
            layers += [ResBlock(a, a), nn.Conv2d(a, b, 3, 2, 1)]
        layers += [ResBlock(widths[-1], widths[-1]), nn.GroupNorm(_groups(widths[-1]), widths[-1]), nn.SiLU(),
                   nn.Conv2d(widths[-1], code_dim, 1)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class VQDecoder(nn.Module):
    """Codes (N, code_dim, h, w) -> image: the encoder's mirror (nearest 2x upsampling and a 3x3
    convolution per level); the last layer is ``conv_out``, where VQGAN's adaptive weight is
    measured. No output squashing (VQGAN's decoder has none); samples are clamped to [-1, 1]
    where they are shown."""

    def __init__(self, out_shape: Sequence[int], code_dim: int, width: int = 32, downs: int = 2,
                 channel_max: int = 256):
        super().__init__()
        _check_shape(out_shape, downs, "vq_decoder")
        widths = _widths(width, downs, channel_max)[::-1]
        layers: list[nn.Module] = [nn.Conv2d(code_dim, widths[0], 3, 1, 1), ResBlock(widths[0], widths[0])]
        for a, b in zip(widths, widths[1:]):
            layers += [nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(a, b, 3, 1, 1), ResBlock(b, b)]
        layers += [nn.GroupNorm(_groups(widths[-1]), widths[-1]), nn.SiLU()]
        self.body = nn.Sequential(*layers)
        self.conv_out = nn.Conv2d(widths[-1], out_shape[0], 3, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.body(z))


class Quantized(NamedTuple):
    """What :class:`VectorQuantizer` returns: ``z``, the quantised codes with the straight-through
    gradient (the encoder's gradient passes unchanged); ``indices`` (N, h, w), the codes chosen;
    ``loss``, the codebook loss + beta x the commitment loss (fp32)."""

    z: torch.Tensor
    indices: torch.Tensor
    loss: torch.Tensor


class VectorQuantizer(nn.Module):
    """VQ-VAE's quantiser (van den Oord et al. 2017): ``codes`` vectors of ``code_dim``; each
    position of ``z_e`` takes its nearest code by Euclidean distance. The loss is
    |sg[z_e] - e|^2 (moves the codes) + beta |z_e - sg[e]|^2 (commits the encoder), as VQGAN's.
    Everything here runs in fp32 under autocast: a bf16 distance would pick the wrong code for
    nearly equal candidates."""

    def __init__(self, code_dim: int, codes: int = 256, beta: float = 0.25):
        super().__init__()
        if codes < 2:
            raise ValueError(f"codes is the codebook's size, >= 2, got {codes}")
        if not 0.0 <= beta:
            raise ValueError(f"beta (the commitment weight) must be >= 0, got {beta}")
        self.beta = beta
        self.codebook = nn.Embedding(codes, code_dim)
        nn.init.uniform_(self.codebook.weight, -1.0 / codes, 1.0 / codes)  # (VQGAN's initialisation)

    def nearest(self, z_e: torch.Tensor) -> torch.Tensor:
        """The index of the nearest code at each position of ``z_e`` (N, C, h, w) -> (N, h, w)."""
        with torch.autocast(z_e.device.type, enabled=False):
            flat = z_e.float().permute(0, 2, 3, 1).reshape(-1, z_e.shape[1])
            book = self.codebook.weight.float()
            dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ book.t() + book.pow(2).sum(1)
            return dist.argmin(1).view(z_e.shape[0], *z_e.shape[2:])

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes (N, C, h, w) for ``indices`` (N, h, w)."""
        return self.codebook(indices).permute(0, 3, 1, 2).float()

    def forward(self, z_e: torch.Tensor) -> Quantized:
        with torch.autocast(z_e.device.type, enabled=False):
            z = z_e.float()
            indices = self.nearest(z)
            e = self.lookup(indices)
            loss = F.mse_loss(e, z.detach()) + self.beta * F.mse_loss(z, e.detach())
            return Quantized(z + (e - z).detach(), indices, loss)


def vq_encoder(*, in_shape: Sequence[int], code_dim: int, width: int = 32, downs: int = 2, channel_max: int = 256):
    """VQGAN's encoder: image -> code_dim channels at 1 / 2^downs of its side (residual blocks)."""
    return VQEncoder(in_shape, code_dim, width, downs, channel_max)


def vq_decoder(*, out_shape: Sequence[int], code_dim: int, width: int = 32, downs: int = 2, channel_max: int = 256):
    """VQGAN's decoder: quantised codes -> image; its last layer conv_out carries the adaptive weight."""
    return VQDecoder(out_shape, code_dim, width, downs, channel_max)


def vector_quantizer(*, code_dim: int, codes: int = 256, beta: float = 0.25):
    """VQ-VAE's codebook of `codes` vectors: nearest code, straight-through, codebook + beta x commitment loss."""
    return VectorQuantizer(code_dim, codes, beta)


# ------------------------------------------------------------------------------ the system
class VQGAN(GANSystem):
    """VQGAN's first stage as a system (see the module docstring)."""

    grid_nrow = 8

    def __init__(self, loss: Any, sample_shape: Sequence[int], optim: Any, dataset: Any, code_dim: int = 64,
                 l1_weight: float = 1.0, disc_weight: float = 0.8, disc_start: int = 0,
                 adaptive_layer: str = "conv_out.weight", d_layers: int = 2):
        self.loss, self.dataset, self.sample_shape = loss, dataset, tuple(sample_shape)
        if len(self.sample_shape) != 3:
            raise ValueError(f"vqgan autoencodes images (C, H, W); the data's samples have shape {self.sample_shape}")
        if disc_start < 0:
            raise ValueError(f"disc_start is a step, >= 0, got {disc_start}")
        self.l1_weight, self.disc_weight, self.adaptive_layer = l1_weight, disc_weight, adaptive_layer
        self.networks = {
            "E": Network("encoder", {"in_shape": self.sample_shape, "code_dim": code_dim}, default="vq_encoder"),
            "Q": Network("quantizer", {"code_dim": code_dim}, default="vector_quantizer"),
            "G": Network("decoder", {"out_shape": self.sample_shape, "code_dim": code_dim}, default="vq_decoder"),
            "D": Network("discriminator", {"in_shape": self.sample_shape}, default="patchgan",
                         args={"n_layers": d_layers, "norm": "batch"}),
        }
        betas = tuple(optim.betas)
        self.optimizers = {"G": Optimizer(["E", "Q", "G"], optim.lr_g, betas), "D": Optimizer(["D"], optim.lr_d, betas)}
        self.phases = [Phase("G", "G", self.g_loss),
                       Phase("D", "D", self.d_loss, new_batch=False, penalize=["D"], start=disc_start)]
        self._held_out: torch.Tensor | None = None

    # --- the autoencoder
    def reconstruct(self, nets: dict[str, nn.Module], x: torch.Tensor) -> tuple[torch.Tensor, Quantized]:
        q = nets["Q"](nets["E"](x))
        return nets["G"](q.z), q

    def encode(self, nets: dict[str, nn.Module], images: torch.Tensor) -> torch.Tensor:
        """The code indices (N, h, w) of ``images`` (N, C, H, W) in [-1, 1]."""
        return nets["Q"].nearest(nets["E"](images))

    def decode(self, nets: dict[str, nn.Module], indices: torch.Tensor) -> torch.Tensor:
        """Images for code indices (N, h, w)."""
        return nets["G"](nets["Q"].lookup(indices))

    def adaptive_weight(self, rec: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
        """VQGAN's lambda: |grad rec| / (|grad adv| + 1e-4) at G's ``adaptive_layer``, clamped to
        [0, 1e4], detached, times ``disc_weight``; the norms in fp32."""
        last = self._adaptive  # (the layer itself, DDP or not: found once, in setup)
        g_rec, = torch.autograd.grad(rec, last, retain_graph=True)
        g_adv, = torch.autograd.grad(adv, last, retain_graph=True)
        weight = g_rec.float().norm() / (g_adv.float().norm() + 1e-4)
        return weight.clamp(0.0, 1e4).detach() * self.disc_weight

    def setup(self, nets: dict[str, nn.Module]) -> None:
        super().setup(nets)
        self._adaptive = self.network("G").get_parameter(self.adaptive_layer)  # (checked in check())

    # --- the phases
    _real = staticmethod(Unconditional._real)

    def g_loss(self, batch: Any) -> Terms:
        x = self._real(batch)
        recon, q = self.reconstruct(self.nets, x)
        rec = self.l1_weight * (x.float() - recon.float()).abs().mean()
        loss = rec + q.loss
        logs = {"rec_l1": rec.detach() / self.l1_weight if self.l1_weight else rec.detach(), "codebook": q.loss.detach()}
        book = getattr(self.network("Q"), "codebook", None)
        if book is not None:  # how many codes are in use: exp of the entropy of their frequencies (the
            idx = q.indices.flatten()  # counts by index_add, into a tensor of fixed size: no host sync)
            p = idx.new_zeros(book.num_embeddings, dtype=torch.float32).index_add_(0, idx, torch.ones_like(idx, dtype=torch.float32))
            p = p / p.sum()
            logs["perplexity"] = torch.exp(-(p * p.clamp_min(1e-10).log()).sum())
        if self.runs("D"):  # (before disc_start: reconstruction only)
            adv, adv_logs = g_adversarial(self.loss, self.nets["D"](recon), lambda: self.nets["D"](x))
            weight = self.adaptive_weight(rec, adv.float())
            loss = loss + weight * adv
            logs.update(g_gan=adv.detach(), adaptive_weight=weight, **adv_logs)
        return Terms(loss, logs, keep={"recon": recon.detach()})

    def d_loss(self, batch: Any) -> Terms:
        x = self._real(batch)
        recon = self.kept["recon"] if self.kept is not None else None
        if recon is None:  # (phase G did not run on this batch)
            with torch.no_grad():
                recon = self.reconstruct(self.nets, x)[0]
        real_logits = self.nets["D"](x)
        loss, logs = d_adversarial(self.loss, real_logits, self.nets["D"](recon))
        return Terms(loss, logs, judged={"D": Judged((x,), (recon,), real_logits=real_logits)})

    # --- samples: reconstructions of held-out images
    def held_out(self, n: int) -> torch.Tensor:
        if self._held_out is None or len(self._held_out) < n:
            self._held_out = held_out_images(self.dataset, max(n, 64)).float()
        return self._held_out[:n]

    def noise(self, n, device="cpu", generator=None) -> torch.Tensor:
        """The first ``n`` held-out images (deterministic: ``generator`` is unused); repeated, with
        a warning, when the data holds fewer."""
        images = self.held_out(n)
        if len(images) < n:
            warnings.warn(f"vqgan: the data has {len(images)} held-out images, repeated to the {n} asked for; "
                          f"set log.eval_samples (and log.n_samples) to at most {len(images)}", stacklevel=2)
            images = images.repeat((n + len(images) - 1) // len(images), 1, 1, 1)[:n]
        return images.to(device)

    def generate(self, nets, noise) -> torch.Tensor:
        return self.reconstruct(nets, noise)[0]

    def write_samples(self, samples: torch.Tensor, noise: Any, path: Any) -> Any:
        """Originals and reconstructions in alternate rows of 8."""
        from torchvision.utils import save_image

        rows = []
        for i in range(0, len(samples), 8):
            rows += [noise[i:i + 8].cpu().float(), samples[i:i + 8].cpu().float()]
        save_image(torch.cat(rows).clamp(-1, 1), str(path), nrow=8, normalize=True, value_range=(-1, 1), pad_value=1.0)
        return path

    def check(self, nets):
        with torch.no_grad():
            x = torch.zeros(2, *self.sample_shape)
            z_e = nets["E"](x)
            q = nets["Q"](z_e)
            if not isinstance(q, tuple) or len(q) != 3:
                raise ValueError("network Q must return Quantized(z, indices, loss), as vector_quantizer does")
            out = nets["G"](q.z)
            if tuple(out.shape[1:]) != self.sample_shape:
                raise ValueError(f"E, Q and G give images of shape {tuple(out.shape[1:])} for the data's "
                                 f"{self.sample_shape}: E's and G's downs must agree")
            try:
                nets["G"].get_parameter(self.adaptive_layer)
            except AttributeError:
                raise ValueError(f"adaptive_layer '{self.adaptive_layer}' is not a parameter of network G "
                                 f"({type(nets['G']).__name__}); name one of its parameters, e.g. "
                                 f"{next(n for n, _ in reversed(list(nets['G'].named_parameters())))}") from None


def vqgan(*, loss, sample_shape, optim, dataset, code_dim: int = 64, l1_weight: float = 1.0,
          disc_weight: float = 0.8, disc_start: int = 0, adaptive_layer: str = "conv_out.weight", d_layers: int = 2):
    """VQGAN's first stage (Esser et al. 2021): encoder, codebook, decoder and PatchGAN; L1 +
    codebook + adaptively weighted adversarial loss, the discriminator from disc_start."""
    return VQGAN(loss, sample_shape, optim, dataset, code_dim, l1_weight, disc_weight, disc_start, adaptive_layer,
                 d_layers)


# ------------------------------------------------------------------------------ the metric
def reconstruction(*, dataset=None):
    """How close a reconstruction is to its input (autoencoders: vqgan): mean L1 and PSNR in
    [-1, 1] (peak-to-peak 2), per image then averaged."""

    def metric(samples: torch.Tensor, dataset: Any, inputs: Any = None) -> dict[str, float]:
        if not torch.is_tensor(inputs) or inputs.shape != samples.shape:
            raise ValueError("the reconstruction metric compares samples with the images they were made from; it "
                             "needs a system whose noise is those images (vqgan)")
        x, y = inputs.float(), samples.float().clamp(-1, 1)
        mse = (x - y).pow(2).flatten(1).mean(1)
        psnr = 10 * torch.log10(4.0 / mse.clamp_min(1e-12))
        return {"l1": (x - y).abs().mean().item(), "psnr": psnr.mean().item()}

    return metric


@hookimpl
def ganforge_register_networks(register):
    register("vq_encoder", vq_encoder)
    register("vq_decoder", vq_decoder)
    register("vector_quantizer", vector_quantizer)


@hookimpl
def ganforge_register_objectives(register):
    register("vqgan", vqgan)


@hookimpl
def ganforge_register_metrics(register):
    register("reconstruction", reconstruction)
