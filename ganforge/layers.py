"""Small building blocks shared by architecture plugins."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["forward_with_code_head"]


def forward_with_code_head(net: nn.Sequential, q: nn.Module | None, x: torch.Tensor, codes: bool):
    """A discriminator's forward when ``net``'s last layer gives the logit and ``q``, on the same
    features, the code logits (InfoGAN's Q head): logits, or ``(logits, code_logits)``."""
    if not codes:
        return net(x).view(-1)
    if q is None:
        raise ValueError("this discriminator has no code head: set discriminator.args.codes")
    h = net[:-1](x)
    return net[-1](h).view(-1), q(h).flatten(1)
