"""A ganforge plugin: an objective, i.e. an adversarial system (see docs/writing-plugins.md,
"A minimal plugin of each kind" and "Adversarial systems: the objective contract")."""
import torch

import ganforge
from ganforge.plugins.objectives import Unconditional
from ganforge.system import Terms

GANFORGE_PLUGIN_API = 2  # the plugin API this module was written for


class MyObjective(Unconditional):
    """The unconditional GAN (networks G and D, phases D then G) with instance noise (Sønderby
    et al. 2016): D sees real and fake samples with Gaussian noise of std ``sigma`` added."""

    capturable = True

    def __init__(self, loss, z_dim, sample_shape, n_critic, optim, sigma: float = 0.1):
        super().__init__(loss, z_dim, sample_shape, n_critic, optim)
        self.sigma = sigma

    def d_loss(self, batch):
        real = self._real(batch)
        with torch.no_grad():
            fake = self.G(self.noise(real.shape[0], real.device))
        real = real + self.sigma * torch.randn_like(real)
        fake = fake + self.sigma * torch.randn_like(fake)
        real_logits, fake_logits = self.D(real), self.D(fake)
        logs = {"d_real": self.loss.score(real_logits.detach().float()).mean()}
        return Terms(self.loss.d_loss(real_logits, fake_logits), logs, judged={"D": (real, fake)})


def my_objective(*, loss, z_dim, sample_shape, n_critic, optim, sigma: float = 0.1):
    """The unconditional GAN with instance noise on D's inputs."""
    return MyObjective(loss, z_dim, sample_shape, n_critic, optim, sigma)


@ganforge.hookimpl
def ganforge_register_objectives(register):
    register("my_objective", my_objective)
