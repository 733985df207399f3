"""A ganforge plugin: a metric (see docs/writing-plugins.md, "A minimal plugin of each kind")."""
import torch

import ganforge

GANFORGE_PLUGIN_API = 2  # the plugin API this module was written for


class MyMetric:
    """Mean distance from each generated sample to its nearest real sample (lower is better).
    Called as ``metric(samples, dataset)`` with generated samples on the CPU, in the data's
    range; returns ``{name: float}``, logged as ``eval/my_metric/<name>``."""

    def __init__(self, dataset, n_real: int = 2000):
        items = [dataset[i] for i in range(min(n_real, len(dataset)))]  # tensors, or (tensor, label)
        items = [x[0] if isinstance(x, (tuple, list)) else x for x in items]
        self.real = torch.stack(items).flatten(1).float().cpu()

    def __call__(self, samples, dataset=None):
        distances = torch.cdist(samples.flatten(1).float(), self.real).min(1).values
        return {"nearest_real": float(distances.mean())}


def my_metric(*, dataset, n_real: int = 2000):
    """Mean distance of generated samples to their nearest real sample."""
    return MyMetric(dataset, n_real)


@ganforge.hookimpl
def ganforge_register_metrics(register):
    register("my_metric", my_metric)
