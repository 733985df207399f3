"""The training step as one function of tensors: every phase of the system in order, with
freezing, gradient accumulation, penalties, non-finite skips, clipping, then EMA and the sums of
logged values. It is written once (:func:`run_step`): :class:`ganforge.training.step.TrainStep`
(the runner) builds its :class:`StepContext` and its :class:`~ganforge.training.plan.StepPlan`
and decides whether it runs eagerly, is warmed up, captured in a CUDA graph, or replayed.

For each running phase (``system.phases``, ``Phase.start``/``stop``): freeze every network it
does not train, draw its batch, compute its loss under autocast plus the due penalties in fp32
(``train.accumulate`` micro-batches, each forward and backward but the last inside DDP's
``no_sync``: one all-reduce per update), clip, step its optimizer; ``repeats`` times. A
non-finite loss skips the update: through fused Adam's ``found_inf`` on the device (graph,
deferred), or by one scalar read (eager).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ganforge.contract.system import as_judged
from ganforge.errors import GanforgeError
from ganforge.training.batches import micro_batches
from ganforge.training.plan import PenaltyTarget, StepPlan

__all__ = ["Freezer", "StepContext", "Tally", "nonfinite_stop", "penalty_keys", "phase_loss", "run_step"]


def nonfinite_stop(state: Any, in_a_row: int) -> GanforgeError:
    """The error that stops a run on non-finite losses (``train.nonfinite``/``max_nonfinite``)."""
    return GanforgeError(
        f"training stopped at step {state.step}: non-finite losses ({in_a_row} in a row). "
        f"Lower the learning rates, add a penalty (penalties: [{{name: r1, weight: 10}}]) or use "
        f"train.precision=no. Last checkpoint: {state.last_checkpoint or 'none'}"
    )


def penalty_keys(name: str, nets: tuple[str, ...]) -> list[str]:
    """The logged names of a penalty on these discriminators."""
    return [f"penalty_{name}"] if len(nets) == 1 else [f"penalty_{name}_{n}" for n in nets]


class Freezer:
    """Which networks get gradients: ``freeze(trainable)`` turns them off for every other
    network (none computed, none all-reduced), touching only the parameters that change."""

    def __init__(self, params: dict[str, list[torch.nn.Parameter]]):
        self.params, self.all = params, frozenset(params)
        self.frozen: frozenset[str] = frozenset()

    def freeze(self, trainable: set[str] | frozenset[str]) -> None:
        frozen = self.all - trainable
        if frozen != self.frozen:
            for n in frozen ^ self.frozen:
                flag = n not in frozen
                for p in self.params[n]:  # (module.requires_grad_ walks the module tree each call)
                    p.requires_grad_(flag)
            self.frozen = frozen

    def thaw(self) -> None:
        """Between steps every network is trainable."""
        self.freeze(self.all)


class Tally:
    """The logged values' sums and the step counters. The graph keeps them on the device (read
    when logging); ``deferred`` counts non-finite steps there too."""

    def __init__(self, device: torch.device, step: int, skipped: int, penalty_keys: set[str]):
        self.device, self.penalty_keys = device, penalty_keys
        self.step_t = torch.tensor(step, device=device)
        self.skipped_t = torch.tensor(skipped, device=device)
        self.streak_t = torch.zeros((), dtype=torch.long, device=device)  # non-finite steps in a row
        self.worst_t = torch.zeros((), dtype=torch.long, device=device)  # longest streak in window
        self.nonfinite_in_a_row = 0  # eager
        self.keys: list[str] = []
        self.sums = torch.zeros(0, device=device)  # per logged value: sum over good steps
        self.counts = torch.zeros(0, device=device)  # and the number of steps in that sum
        self.present: dict[tuple, torch.Tensor] = {}  # which logged values a step has, on the device


@dataclass
class StepContext:
    """Everything the step function reads, set up once by the runner. ``state`` is the
    :class:`~ganforge.contract.state.TrainState` (its ``step``, ``skipped``, ``config`` and
    ``last_checkpoint``); the rest is the step's own."""

    state: Any
    accelerator: Any
    device: torch.device
    world: int
    system: Any  # the GANSystem (its ``kept`` is set before each phase loss)
    phases: list  # the system's phases (ganforge.contract.system.Phase)
    nets: dict[str, torch.nn.Module]  # as prepared (DDP-wrapped where distributed)
    opts: dict[str, Any]  # by the system's optimizer names
    trainable: list[set[str]]  # per phase: stepped
    unfrozen: list[set[str]]  # per phase: with gradients (trainable, and what it keeps for the next phase)
    targets: list[list[PenaltyTarget]]  # per phase
    clips: dict[str, float]
    accumulate: int
    deferred: bool  # non-finite skips through found_inf, counted on the device
    batch: Callable[[int], Any]  # the k-th batch of this step
    autocast: Callable[[], Any]
    augment: Any  # ganforge.training.augment_hooks.AugmentHooks or None
    lrs: Any  # ganforge.training.schedules.LRSchedules
    ramps: Any  # ganforge.training.schedules.Ramps
    ema: Any  # ganforge.training.ema.EMAUpdater
    freezer: Freezer
    tally: Tally
    graph: bool
    seen: set  # plans run at least once (a new logged name after that is an error on the graph path)
    on_new_keys: Callable[[], None]  # the runner drops graphs captured before new logged values


def run_step(ctx: StepContext, plan: StepPlan) -> None:
    """Every phase, EMA and log sums. In graph mode: no Python branch on a tensor's value."""
    s, acc = ctx.state, ctx.accelerator
    ctx.lrs.apply(s.step, ctx.tally.step_t)
    ctx.ramps.apply(s.step, ctx.tally.step_t)
    nonfinite = torch.zeros((), dtype=torch.bool, device=ctx.device)
    values: dict[str, torch.Tensor] = {}  # each phase's last run, and any penalty computed
    batch, k = None, 0
    kept: dict[tuple[int, int], Any] = {}  # what the previous running phase kept, by (run, micro-batch)
    for i, (phase, phase_plan) in enumerate(zip(ctx.phases, plan.phases, strict=True)):
        if not phase_plan.runs:  # not started yet, or stopped
            continue
        ctx.freezer.freeze(ctx.unfrozen[i])
        opt = ctx.opts[phase.optimizer]
        keeping: dict[tuple[int, int], Any] = {}
        for run, due_flags in enumerate(phase_plan.due):
            if phase.new_batch or batch is None:
                batch = ctx.batch(k)
                k += 1
            due = [t for t, on in zip(ctx.targets[i], due_flags, strict=True) if on]
            parts = micro_batches(batch, ctx.accumulate)
            for j, part in enumerate(parts):  # train.accumulate: micro-batches, one update
                with _no_sync(ctx, i, last=j == len(parts) - 1):  # (DDP decides in the forward)
                    ctx.system.kept = kept.get((run, j))
                    loss, logged, keep = phase_loss(ctx, phase, part, due)
                    if keep is not None:
                        keeping[(run, j)] = keep
                    _merge(values, logged, len(parts), j == 0)
                    nonfinite = nonfinite | ~torch.isfinite(loss.detach())
                    if ctx.world > 1:  # every rank decides alike (a device-side all-reduce)
                        nonfinite = acc.reduce(nonfinite.float(), reduction="sum") > 0
                    if j == 0:
                        opt.zero_grad(set_to_none=True)
                    if not ctx.deferred and bool(nonfinite):  # one scalar read per loss: never apply a NaN update
                        ctx.system.kept = None  # (nothing of this step outlives it)
                        return skip_step(ctx, phase.name, loss)  # (the runner unfreezes every network)
                    acc.backward(loss / len(parts))  # DDP all-reduces once, after the last
            if phase.optimizer in ctx.clips:
                values[f"grad_norm_{phase.optimizer.lower()}"] = _clip(ctx, opt, ctx.clips[phase.optimizer])
            if ctx.deferred:
                opt.found_inf = nonfinite.float()  # fused Adam leaves weights and moments as they were if 1
                try:
                    opt.step()
                finally:
                    del opt.found_inf
            else:
                opt.step()
        kept = keeping
    ctx.system.kept = None
    ctx.freezer.thaw()  # between steps every network is trainable
    ctx.ema(nonfinite, ctx.tally.step_t)
    _record(ctx, values, nonfinite, plan)


def _no_sync(ctx: StepContext, i: int, last: bool) -> Any:
    """DDP's ``no_sync`` around a micro-batch's forward and backward (DDP decides in the forward
    whether the backward all-reduces): for the phase's trainable networks on every micro-batch
    but the last, and always for the networks it does not train. A frozen network's forward
    outside it (D's in G's phase) would leave DDP waiting for gradients that never come, and the
    next phase's first micro-batch would all-reduce them early (counted: 5 instead of 3 in 3
    steps at train.accumulate=4)."""
    if ctx.world == 1:  # (no DDP: nothing to hold back, and nothing to build per micro-batch)
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    for n, net in ctx.nets.items():
        kept_for_later = n in ctx.unfrozen[i] and n not in ctx.trainable[i]  # (its backward comes later)
        if hasattr(net, "no_sync") and not kept_for_later and (n not in ctx.trainable[i] or not last):
            stack.enter_context(net.no_sync())
    return stack


def _merge(values: dict[str, torch.Tensor], logged: dict[str, torch.Tensor], parts: int, first: bool) -> None:
    """A micro-batch's logged values into the step's (with ``parts`` micro-batches: their mean)."""
    for key, value in logged.items():
        share = value if parts == 1 else value.detach().float() / parts
        values[key] = share if first or key not in values else values[key] + share


def phase_loss(ctx: StepContext, phase: Any, batch: Any, due: list[PenaltyTarget]) -> tuple[torch.Tensor, dict, Any]:
    """The phase's loss under autocast, plus ``weight * every * penalty`` in fp32 for each due
    penalty on each discriminator it applies to; returns it with the values it logs and what
    it keeps for the next phase (:attr:`Terms.keep`)."""
    logged: dict[str, torch.Tensor] = {}
    aug = ctx.augment
    with ctx.autocast(), aug.watch() if aug is not None else contextlib.nullcontext():
        terms = phase.loss(batch)
    if aug is not None:
        aug.observe(terms.judged, f"objective '{ctx.state.config.objective.name}'")  # ADA: D's logits on the reals
        logged.update(aug.logs())
    loss = terms.loss
    logged.update(terms.logs)
    for t in due:
        for net, key in zip(t.nets, penalty_keys(t.penalty.name, t.nets), strict=True):
            j = as_judged(terms.judged[net])
            real, fake = (x[0] if len(x) == 1 else x for x in (j.real, j.fake))  # (one input: a tensor)
            with torch.autocast(ctx.device.type, enabled=False):  # penalties in fp32
                value = t.fn(j.forward or ctx.nets[net], real, fake)
            logged[key] = value.detach()
            loss = loss + ctx.ramps.weight(t.penalty) * value  # weight * every (ramped: this step's)
    logged[f"loss_{phase.name.lower()}"] = loss
    return loss, logged, terms.keep


def _clip(ctx: StepContext, opt: Any, max_norm: float) -> torch.Tensor:
    """Clip the optimizer's gradients to ``max_norm`` (L2), after fp16's unscale (the
    GradScaler then steps without unscaling again); returns the norm before clipping."""
    scaler = getattr(ctx.accelerator, "scaler", None)
    if scaler is not None:
        scaler.unscale_(getattr(opt, "optimizer", opt))
    params = [p for g in opt.param_groups for p in g["params"]]
    return torch.nn.utils.clip_grad_norm_(params, max_norm).detach()


def skip_step(ctx: StepContext, phase: str, loss: torch.Tensor) -> None:
    """Eager: a non-finite loss skipped the rest of the step."""
    s, t = ctx.state, ctx.state.config.train
    s.skipped += 1
    ctx.tally.nonfinite_in_a_row += 1
    ctx.accelerator.print(f"step {s.step + 1}: non-finite loss in phase {phase} ({float(loss.detach())}); "
                          f"update skipped ({s.skipped} skipped so far)")
    if t.nonfinite == "stop" or ctx.tally.nonfinite_in_a_row >= t.max_nonfinite:
        raise nonfinite_stop(s, ctx.tally.nonfinite_in_a_row)


def _record(ctx: StepContext, values: dict[str, torch.Tensor], nonfinite: torch.Tensor, plan: StepPlan) -> None:
    """Add this step's values to the sums (nothing for a skipped step), count the step."""
    tally = ctx.tally
    new = sorted((set(values) | tally.penalty_keys) - set(tally.keys))
    if new:  # a plan's first step fixes what it logs (on the fast path it runs eagerly)
        if ctx.graph and plan in ctx.seen:
            raise GanforgeError(f"objective '{ctx.state.config.objective.name}' logged new values "
                                f"{new} in a step like an earlier one; a capturable system logs the same "
                                f"names every step")
        tally.keys = tally.keys + new
        pad = torch.zeros(len(new), device=ctx.device)
        tally.sums, tally.counts = torch.cat([tally.sums, pad]), torch.cat([tally.counts, pad])
        tally.present.clear()
        ctx.on_new_keys()  # (a phase that starts later: graphs captured before wrote the old sums)
    zero = torch.zeros((), device=ctx.device)
    stacked = torch.stack([values[k].detach().float() if k in values else zero for k in tally.keys])
    mask = tuple(k in values for k in tally.keys)  # a lazy penalty's value is not there every step
    present = tally.present.get(mask)
    if present is None:  # made once per mask (on the fast path during the eager warm-up)
        present = tally.present[mask] = torch.tensor(mask, device=ctx.device)
    if ctx.deferred:
        tally.sums.add_(torch.where(nonfinite, zero, stacked))
        tally.counts.add_((present & ~nonfinite).float())
        tally.skipped_t.add_(nonfinite.long())
        tally.streak_t.copy_((tally.streak_t + 1) * nonfinite.long())
        torch.maximum(tally.worst_t, tally.streak_t, out=tally.worst_t)
        tally.step_t.add_(1)
    else:
        tally.sums.add_(stacked)
        tally.counts.add_(present.float())
        tally.nonfinite_in_a_row = 0
