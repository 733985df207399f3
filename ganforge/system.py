"""The adversarial-system contract as plugins import it (``from ganforge.system import GANSystem,
Network, Optimizer, Phase, Terms``): a thin re-export of :mod:`ganforge.contract.system`, where it lives (the guide's "What a plugin
may rely on"; ``tests/test_layout.py`` checks that these names are the same objects)."""
from ganforge.contract.system import (  # noqa: F401
    GANSystem,
    Judged,
    Judgement,
    Network,
    Optimizer,
    Phase,
    Terms,
    as_judged,
    d_adversarial,
    feature_matching,
    g_adversarial,
    heads,
    logit_sum,
    penalty_kind,
    unwrapped,
)

__all__ = ["GANSystem", "Judged", "Judgement", "Network", "Optimizer", "Phase", "Terms", "as_judged", "d_adversarial", "feature_matching", "g_adversarial", "heads", "logit_sum", "penalty_kind", "unwrapped"]
