"""What the image-to-image systems (``pix2pix``, ``cyclegan``) share: their inputs, sample
pictures, ``ganforge translate`` and the contract with their datasets.

A translation dataset (``paired_folder``, ``unpaired_folder``, ``mnist_edges``, ``mnist_thick``)
yields batches ``(a, b)`` or ``(a, b, labels)``: images of domain A and of domain B, aligned or
not (``dataset.paired``). It also has ``input_shape`` (A's shape; ``sample_shape`` is B's)
and ``evaluation()``: its held-out split as :class:`Inputs`, with the known targets.

A translation system's "noise" is an :class:`Inputs`: images to translate (the first ``n`` of
the held-out split, the same every time; the generator argument is unused) together with what
is known about them. ``generate`` returns the translations (direction A->B first, then B->A
for CycleGAN); the translation metrics receive the same :class:`Inputs` and compare.
Pictures (``show=True``: the training grid, ``ganforge sample --out X.png``) are rows of
input | output | target (and, for CycleGAN, the reconstruction), 8 examples per row.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from torch import nn

from ganforge.system import GANSystem, heads

__all__ = ["Inputs", "TranslationSystem", "arrange", "as_rgb", "split_batch"]

COLUMNS = 8  # examples per row of a picture
PICTURE = 32  # examples in a picture at most


@dataclass
class Inputs:
    """Images to translate and what is known about them (tensors of the same length per domain)."""

    a: torch.Tensor | None = None  # domain A, to be mapped to B
    b: torch.Tensor | None = None  # domain B, to be mapped to A (CycleGAN)
    target_ab: torch.Tensor | None = None  # what each a should become, when known (pix2pix: its pair)
    target_ba: torch.Tensor | None = None
    labels_a: torch.Tensor | None = None  # classes, when the data has them (the MNIST demos)
    labels_b: torch.Tensor | None = None
    show: bool = False  # a picture: rows of input | output | target

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self) if isinstance(getattr(self, f.name), torch.Tensor)}

    def __len__(self) -> int:
        return max(len(t) for t in self._tensors().values())

    def __getitem__(self, index: slice) -> Inputs:
        return replace(self, **{k: t[index] for k, t in self._tensors().items()})

    def to(self, device: Any) -> Inputs:
        return replace(self, **{k: t.to(device) for k, t in self._tensors().items()})

    def only(self, *names: str) -> Inputs:
        """A copy with just these fields (and ``show``)."""
        return replace(Inputs(show=self.show), **{k: getattr(self, k) for k in names})


def split_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(a, b)`` from a translation dataset's batch ``(a, b[, labels])``."""
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise ValueError("image-to-image systems need (A, B) batches: a translation dataset "
                         "(paired_folder, unpaired_folder, mnist_edges, mnist_thick)")
    return batch[0], batch[1]


def as_rgb(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Grey images broadcast to ``channels`` (for a picture next to colour ones)."""
    return x.expand(-1, channels, -1, -1) if x.shape[1] == 1 and channels > 1 else x


def arrange(rows: list[torch.Tensor], columns: int = COLUMNS) -> torch.Tensor:
    """Images for a grid of ``columns`` per row: for each block of ``columns`` examples, one
    row from each tensor in ``rows`` (input, output, target, ...); a last, shorter block is
    padded with black so that rows stay aligned; grey is shown as RGB next to colour."""
    channels = max(r.shape[1] for r in rows)
    rows = [as_rgb(r.float(), channels) for r in rows]
    blocks = []
    for start in range(0, len(rows[0]), columns):
        for r in rows:
            part = r[start:start + columns]
            pad = part.new_full((columns - len(part), *part.shape[1:]), -1.0)
            blocks += [part, pad]
    return torch.cat(blocks)


class TranslationSystem(GANSystem):
    """Base of the image-to-image systems: :attr:`directions` maps ``"AtoB"`` (and
    ``"BtoA"``) to ``(generator name, input shape, output shape)``."""

    directions: dict[str, tuple[str, tuple[int, ...], tuple[int, ...]]]

    def __init__(self, dataset: Any):
        if dataset is None or not hasattr(dataset, "input_shape") or not callable(getattr(dataset, "evaluation", None)):
            raise ValueError(f"needs an image-to-image dataset (paired_folder, unpaired_folder, mnist_edges, "
                             f"mnist_thick), got {type(dataset).__name__}")
        self.dataset = dataset
        self.a_shape, self.b_shape = tuple(dataset.input_shape), tuple(dataset.sample_shape)
        self._held_out: Inputs | None = None
        self.grid_nrow = COLUMNS

    # --- inputs
    def held_out(self) -> Inputs:
        """The dataset's held-out split (loaded once)."""
        if self._held_out is None:
            self._held_out = self.dataset.evaluation()
        return self._held_out

    #: the fields of :class:`Inputs` this system translates and shows
    uses: tuple[str, ...] = ("a", "target_ab", "labels_a")

    def noise(self, n, device="cpu", generator=None) -> Inputs:
        """The first ``n`` held-out examples (deterministic: ``generator`` is unused)."""
        return self.held_out().only(*self.uses)[:n].to(device)

    def grid_noise(self, n, device="cpu", generator=None) -> Inputs:
        inputs = self.noise(min(n, PICTURE), device)
        inputs.show = True
        self.grid_nrow = min(COLUMNS, len(inputs))
        return inputs

    def translate(self, nets: dict[str, nn.Module], images: torch.Tensor, direction: str = "AtoB") -> torch.Tensor:
        """``images`` of the direction's input domain, translated (``ganforge translate``), with
        the networks in the system's test mode."""
        from ganforge.observe.sampling import sampling_mode

        with sampling_mode(self, nets):
            return nets[self.directions[direction][0]](images)

    # --- checks
    def check(self, nets):
        with torch.no_grad():
            for direction, (name, src, dst) in self.directions.items():
                out = nets[name](torch.zeros(2, *src))
                if tuple(out.shape[1:]) != tuple(dst):
                    raise ValueError(f"generator {name} ({direction}) makes images of shape {tuple(out.shape[1:])} "
                                     f"from {tuple(src)}; the data needs {tuple(dst)}")
            for name, spec in self.networks.items():
                if spec.kind == "discriminator":
                    out = heads(nets[name](torch.zeros(2, *spec.context["in_shape"])))
                    if any(h.shape[0] != 2 for h in out):
                        raise ValueError(f"discriminator {name} returned shapes {[tuple(h.shape) for h in out]} for 2 "
                                         f"images; it must return logits (or a map of them) per image")
