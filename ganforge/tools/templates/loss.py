"""A ganforge plugin: an adversarial loss (see docs/writing-plugins.md, "A minimal plugin of each kind")."""
import torch.nn.functional as F

import ganforge
from ganforge.plugins.losses import Loss

GANFORGE_PLUGIN_API = 2  # the plugin API this module was written for


class MyLoss(Loss):
    """Non-saturating BCE with one-sided label smoothing (Salimans et al. 2016): real targets
    are ``smooth`` instead of 1. Inputs are D's logits (any shape); returns scalars."""

    capturable = True  # tensor code only: the CUDA-graph fast path may capture it

    def __init__(self, smooth: float = 0.9):
        self.smooth = smooth

    def d_loss(self, real, fake):
        real, fake = real.float(), fake.float()
        return (self.smooth * F.softplus(-real) + (1 - self.smooth) * F.softplus(real)).mean() + F.softplus(fake).mean()

    def g_loss(self, fake, real=None):
        return F.softplus(-fake.float()).mean()


@ganforge.hookimpl
def ganforge_register_losses(register):
    register("my_loss", MyLoss)
