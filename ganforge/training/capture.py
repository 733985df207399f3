"""What the CUDA-graph fast path may capture: the reasons a run's step cannot be captured, the
rule that each part declares ``capturable = True`` itself, and capturable Adam."""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from ganforge.training.optim import choices

__all__ = ["HostTraffic", "declares_capturable", "make_capturable", "reasons_against", "warm_up"]


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
    if cfg.train.autocast_cache is True and acc.mixed_precision != "no":
        reasons.append("train.autocast_cache=true: a captured step cannot hold autocast's cached weight casts "
                       "(auto caches them on the eager step only)")
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
    augment = getattr(state, "augment", None)
    if augment is not None and not declares_capturable(augment.augment):
        reasons.append(f"augment '{cfg.augment.name}' does not declare capturable = True")
    for name, choice in choices(cfg, system).items():
        if not issubclass(choice.cls, torch.optim.Adam):  # AdamW is an Adam
            reasons.append(f"optimizer {name} is {choice.cls.__name__}; the graph step needs fused, "
                           f"capturable Adam or AdamW")
        if choice.ramps:
            reasons.append(f"optimizer {name} ramps {' and '.join(choice.ramps)}, which fused Adam reads on the "
                           f"host (a ramped penalty weight is captured)")
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


class HostTraffic(TorchFunctionMode):
    """While active, records what a CUDA graph cannot hold: Python reading a tensor's value
    (``.item()``, ``bool()``, ``float()``, ``int()``, ``.tolist()``, ``.numpy()``: a host
    synchronisation on a GPU) and host data copied to the device (``torch.tensor`` /
    ``torch.as_tensor`` of Python data, ``.to(device)`` / ``.cuda()`` of a tensor in host
    memory). The engine runs one warm-up step of each pattern under it before capturing, and
    does not capture a step that shows any (the reason is printed); ``watch(nets)`` names the
    network whose forward did it.

    ``strict``: count every such call whatever the devices involved (except copies that torch's
    own code makes), for a CPU, where host and device memory are one and a copy to the device
    cannot be told from a no-op: the tests, and the engine when capture is simulated there.
    """

    READS = frozenset({"item", "__bool__", "__float__", "__int__", "__index__", "tolist", "numpy"})

    def __init__(self, strict: bool = False):
        super().__init__()
        self.strict = strict
        self.found: list[str] = []
        self.where: list[str] = []  # the networks whose forward is running, innermost last
        self._hooks: list[Any] = []

    def watch(self, nets: dict[str, torch.nn.Module]) -> HostTraffic:
        def enter(name):
            def hook(module, args):
                self.where.append(name)  # (returns None: the inputs are unchanged)
            return hook

        def leave(module, args, output):
            self.where.pop()  # (returns None: the output is unchanged)

        for name, module in nets.items():
            self._hooks.append(module.register_forward_pre_hook(enter(name)))
            self._hooks.append(module.register_forward_hook(leave))
        return self

    def __exit__(self, *exc):
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        return super().__exit__(*exc)

    def _on_host(self, tensor: Any) -> bool:
        return isinstance(tensor, torch.Tensor) and (self.strict or tensor.device.type == "cpu")

    def _target(self, name: str, args: tuple, kwargs: dict) -> torch.device | None:
        """The device a ``.to`` / ``.cuda`` / ``torch.tensor`` call moves data to, if it names one."""
        if name == "cuda":
            return torch.device("cuda")
        candidates = [kwargs.get("device"), *(args[1:] if name == "to" else ())]
        for c in candidates:
            if isinstance(c, (torch.device, str)):
                return torch.device(c)
            if isinstance(c, torch.Tensor):
                return c.device
        return None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        what = None
        if self.strict and name in ("to", "cuda", "tensor", "as_tensor") and _from_torch(sys._getframe(1)):
            # torch's own code (fused Adam moving found_inf "to" the device it is on) is
            # trusted: on a CPU a copy cannot be told from a no-op, so only callers are judged
            return func(*args, **kwargs)
        if name in self.READS and args and isinstance(args[0], torch.Tensor):
            if self.strict or args[0].device.type != "cpu":
                what = f"Tensor.{name}() reads a tensor's value"
        elif func in (torch.tensor, torch.as_tensor):
            target = self._target(name, args, kwargs)
            if (self.strict and not isinstance(args[0] if args else None, torch.Tensor)) or \
                    (target is not None and target.type != "cpu"):
                what = f"torch.{name}() copies host data to the device"
        elif name in ("to", "cuda") and args and isinstance(args[0], torch.Tensor):
            target = self._target(name, args, kwargs)
            if target is not None and self._on_host(args[0]) and (self.strict or target.type != "cpu"):
                what = f"Tensor.{name}({target}) copies a host tensor to the device"
        if what is not None:
            self.found.append(f"{what} in network '{self.where[-1]}'" if self.where else
                              f"{what} in the step (the system's loss, a penalty or the engine)")
        return func(*args, **kwargs)


def warm_up(runner: Any, plan: Any) -> None:
    """A :class:`~ganforge.training.step.TrainStep` (``runner``) runs ``plan`` uncaptured before capture,
    off the default stream as capture requires. From a plan's second run on (its first
    creates what the step keeps, e.g. masks), the run is watched: Python reading a tensor value
    or host data copied to the device (by any part: a network, the system, a penalty) would
    fail inside capture, so the step then stays uncaptured for the rest of the run (same
    results), with the reason printed; a clean run marks the plan ready to capture."""
    cuda = runner.device.type == "cuda"
    side = torch.cuda.Stream(runner.device) if cuda else None
    if cuda:
        side.wait_stream(torch.cuda.current_stream(runner.device))
    watch = HostTraffic(strict=not cuda).watch(runner.plain) if plan in runner.seen else contextlib.nullcontext()
    with torch.cuda.stream(side) if cuda else contextlib.nullcontext(), watch:
        try:
            runner._step(plan)
        finally:
            runner.ctx.freezer.thaw()
    if cuda:
        torch.cuda.current_stream(runner.device).wait_stream(side)
    if isinstance(watch, HostTraffic):
        if watch.found:
            runner.capture = False
            runner.state.accelerator.print(f"fast path: the step is not captured in a CUDA graph ({watch.found[0]}); "
                                           f"it runs uncaptured, with the same results")
        else:
            runner.checked.add(plan)


_TORCH = str(Path(torch.__file__).parent)


def _from_torch(frame: Any) -> bool:
    return frame is not None and frame.f_code.co_filename.startswith(_TORCH)
