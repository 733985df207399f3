"""What the CUDA-graph fast path may capture: the reasons a run's step cannot be captured, the
rule that each part declares ``capturable = True`` itself, and capturable Adam."""
from __future__ import annotations

from typing import Any

import torch

__all__ = ["declares_capturable", "make_capturable", "reasons_against"]


def reasons_against(state: Any, penalties: list) -> list[str]:
    """Why the step cannot be captured in this run (an empty list: it can)."""
    cfg, acc, dataset, system = state.config, state.accelerator, state.dataset, state.system
    reasons = []
    if acc.device.type != "cuda":
        reasons.append(f"the device is {acc.device.type}, not a CUDA GPU")
    if acc.num_processes > 1:
        reasons.append(f"{acc.num_processes} processes: DDP's gradient all-reduce is not captured")
    if acc.mixed_precision == "fp16":
        reasons.append("fp16 needs a GradScaler whose scale changes between steps (use bf16)")
    data = getattr(dataset, "data", None)
    if not (callable(getattr(dataset, "fetch", None)) and isinstance(data, torch.Tensor)
            and data.device.type == acc.device.type):
        reasons.append(f"dataset '{cfg.data.name}' is not held on the GPU as one tensor with "
                       f"fetch(indices) (data.on_device, in-memory datasets only)")
    loss = getattr(system, "loss", None)
    if loss is not None and not declares_capturable(loss):
        reasons.append(f"loss '{cfg.loss.name}' does not declare capturable = True")
    if not declares_capturable(system):
        reasons.append(f"objective '{cfg.objective.name}' does not declare capturable = True")
    for p, fn in penalties:
        if not declares_capturable(fn):
            reasons.append(f"penalty '{p.name}' does not declare capturable = True")
    return reasons


def declares_capturable(part: Any) -> bool:
    """``capturable = True`` set by the part's own class (or the object): a subclass does not
    inherit its parent's promise, since what it adds may not be tensor code."""
    own = vars(part) if hasattr(part, "__dict__") else {}
    return own.get("capturable", vars(type(part)).get("capturable", False)) is True


def make_capturable(opt: torch.optim.Optimizer) -> None:
    """Fused, capturable Adam, also after loading a checkpoint written by the eager step
    (``load_state_dict`` restores the saved flags, and Adam's step counts on the CPU)."""
    for group in opt.param_groups:
        group["fused"], group["capturable"] = True, True
    for param, values in opt.state.items():
        if torch.is_tensor(values.get("step")):
            values["step"] = values["step"].to(param.device, torch.float32)
