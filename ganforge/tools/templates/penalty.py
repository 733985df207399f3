"""A ganforge plugin: a penalty (see docs/writing-plugins.md, "A minimal plugin of each kind")."""
import torch

import ganforge

GANFORGE_PLUGIN_API = 2  # the plugin API this module was written for


class MyPenalty:
    """R2 (Mescheder et al. 2018): the squared gradient norm of D at the fakes. Called as
    ``penalty(D, real, fake)`` in fp32 with the inputs the phase judged; returns a scalar that
    ganforge scales by the recipe's ``weight * every`` and adds to the discriminator's loss."""

    capturable = True

    def __call__(self, D, real, fake):
        x = fake.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(D(x).sum(), x, create_graph=True)
        return 0.5 * grad.flatten(1).pow(2).sum(1).mean()


@ganforge.hookimpl
def ganforge_register_penalties(register):
    register("my_penalty", MyPenalty)
