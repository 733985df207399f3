"""Building blocks architecture plugins may use (``from ganforge.layers import ...``): a thin re-export of :mod:`ganforge.contract.layers`, where it lives (the guide's "What a plugin
may rely on"; ``tests/test_layout.py`` checks that these names are the same objects)."""
from ganforge.contract.layers import (  # noqa: F401
    CONDITIONINGS_D,
    CONDITIONINGS_G,
    ConditionalBatchNorm,
    check_condition,
    downsample_2x,
    lowpass_2x,
    discriminator_forward,
    forward_with_code_head,
    needs_labels,
    one_hot,
    projection,
    run_conditional,
    upsample_2x,
)

__all__ = ["CONDITIONINGS_D", "CONDITIONINGS_G", "ConditionalBatchNorm", "check_condition", "discriminator_forward", "downsample_2x", "lowpass_2x", "forward_with_code_head", "needs_labels", "one_hot", "projection", "run_conditional", "upsample_2x"]
