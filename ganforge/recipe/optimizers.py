"""The optimizers a recipe may name: every ``torch.optim`` optimizer by lower-case name, less
those an adversarial phase cannot drive."""
from __future__ import annotations

import torch

from ganforge.errors import ConfigError

__all__ = ["UNSUITABLE", "optimizer_types", "resolve_type"]

UNSUITABLE = {"lbfgs": "needs a closure that re-evaluates the loss, which an adversarial phase is not",
              "sparseadam": "updates sparse gradients only (embeddings with sparse=True), and networks' are dense"}


def optimizer_types() -> dict[str, type[torch.optim.Optimizer]]:
    """Every optimizer class in ``torch.optim``, by lower-case name."""
    return {n.lower(): c for n, c in vars(torch.optim).items()
            if isinstance(c, type) and issubclass(c, torch.optim.Optimizer) and c is not torch.optim.Optimizer}


def resolve_type(name: str, where: str) -> type[torch.optim.Optimizer]:
    known = optimizer_types()
    cls = known.get(str(name).lower())
    if cls is None:
        raise ConfigError(f"{where}.type: unknown optimizer '{name}'; torch.optim has "
                          f"{', '.join(sorted(k for k in known if k not in UNSUITABLE))}")
    if cls.__name__.lower() in UNSUITABLE:
        raise ConfigError(f"{where}.type: {cls.__name__} {UNSUITABLE[cls.__name__.lower()]}; "
                          f"choose adam, adamw or sgd")
    return cls
