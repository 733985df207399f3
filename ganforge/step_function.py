"""The training step as one function of tensors: every phase of the system in order, with
freezing, gradient accumulation, penalties, non-finite skips, clipping, then EMA and the sums of
logged values. It is written once; :class:`ganforge.step.TrainStep` (the runner) decides whether
it runs eagerly, is warmed up, captured in a CUDA graph, or replayed.

For each running phase (``system.phases``, ``Phase.start``/``stop``): freeze every network it
does not train, draw its batch, compute its loss under autocast plus the due penalties in fp32
(``train.accumulate`` micro-batches: one backward each, DDP's all-reduce after the last only),
clip, step its optimizer; ``repeats`` times. A non-finite loss skips the update: through fused
Adam's ``found_inf`` on the device (graph, deferred), or by one scalar read (eager).
"""
from __future__ import annotations

import contextlib
from typing import Any

import torch

from ganforge.data import micro_batches
from ganforge.errors import GanforgeError
from ganforge.system import as_judged

__all__ = ["StepFunction", "nonfinite_stop"]


def nonfinite_stop(state: Any, in_a_row: int) -> GanforgeError:
    """The error that stops a run on non-finite losses (``train.nonfinite``/``max_nonfinite``)."""
    return GanforgeError(
        f"training stopped at step {state.step}: non-finite losses ({in_a_row} in a row). "
        f"Lower the learning rates, add a penalty (penalties: [{{name: r1, weight: 10}}]) or use "
        f"train.precision=no. Last checkpoint: {state.last_checkpoint or 'none'}"
    )


class StepFunction:
    """The step's body; :class:`ganforge.step.TrainStep` sets up what it reads (networks,
    optimizers, targets, counters, sums) and runs it."""

    # ---------------------------------------------------------------------- the step
    def _step(self, pattern: tuple) -> None:
        """Every phase, EMA and log sums. In graph mode: no Python branch on a tensor's value."""
        s, acc = self.state, self.state.accelerator
        self.lrs.apply(s.step, self.step_t)
        self.ramps.apply(s.step, self.step_t)
        bad = torch.zeros((), dtype=torch.bool, device=self.device)
        values: dict[str, torch.Tensor] = {}  # each phase's last run, and any penalty computed
        batch, k, flag = None, 0, len(self.phases)
        for i, phase in enumerate(self.phases):
            if not pattern[i]:  # not started yet, or stopped (its penalty flags are all off)
                flag += phase.repeats * len(self.targets[i])
                continue
            self._freeze(self.trainable[i])
            opt = self.opts[phase.optimizer]
            for _ in range(phase.repeats):
                if phase.new_batch or batch is None:
                    batch = s.dataset.fetch(self.indices[k]) if self.device_batches else next(self.batches)
                    k += 1
                due = []
                for p, fn, nets in self.targets[i]:
                    if pattern[flag]:
                        due.append((p, fn, nets))
                    flag += 1
                parts = micro_batches(batch, self.accumulate)
                for j, part in enumerate(parts):  # train.accumulate: micro-batches, one update
                    loss = self._phase_loss(phase, part, due, values, len(parts), j == 0)
                    bad = bad | ~torch.isfinite(loss.detach())
                    if self.world > 1:  # every rank decides alike (a device-side all-reduce)
                        bad = acc.reduce(bad.float(), reduction="sum") > 0
                    if j == 0:
                        opt.zero_grad(set_to_none=True)
                    if not self.deferred and bool(bad):  # one scalar read per loss: never apply a NaN update
                        return self._skip(phase.name, loss)  # (__call__ unfreezes every network)
                    with self._no_sync(i) if j < len(parts) - 1 else contextlib.nullcontext():
                        acc.backward(loss / len(parts))  # DDP all-reduces once, after the last
                if phase.optimizer in self.clips:
                    values[f"grad_norm_{phase.optimizer.lower()}"] = self._clip(opt, self.clips[phase.optimizer])
                if self.deferred:
                    opt.found_inf = bad.float()  # fused Adam leaves weights and moments as they were if 1
                    try:
                        opt.step()
                    finally:
                        del opt.found_inf
                else:
                    opt.step()
        self._freeze(self.all_nets)  # between steps every network is trainable
        self.ema(bad, self.step_t)
        self._record(values, bad, pattern)

    def _no_sync(self, i: int) -> contextlib.ExitStack:
        """No gradient all-reduce for the phase's trainable networks (inner micro-batches)."""
        stack = contextlib.ExitStack()
        for n in self.trainable[i]:
            if hasattr(self.nets[n], "no_sync"):
                stack.enter_context(self.nets[n].no_sync())
        return stack

    def _phase_loss(self, phase: Any, batch: Any, due: list, values: dict, parts: int = 1,
                    first: bool = True) -> torch.Tensor:
        """The phase's loss under autocast, plus ``weight * every * penalty`` in fp32 for each
        due penalty on each discriminator it applies to. Logged values are this run's (with
        ``parts`` micro-batches: their mean)."""
        def log(key: str, value: torch.Tensor) -> None:
            share = value if parts == 1 else value.detach().float() / parts
            values[key] = share if first or key not in values else values[key] + share

        aug = self.state.augment
        with self.state.autocast(), aug.watch() if aug is not None else contextlib.nullcontext():
            terms = phase.loss(batch)
        if aug is not None:
            aug.observe(terms.judged)  # an adaptive augmentation's statistics: D's logits on the reals
            for key, value in aug.logs().items():
                log(key, value)
        loss = terms.loss
        for key, value in terms.logs.items():
            log(key, value)
        for p, fn, nets in due:
            for net, key in zip(nets, self._penalty_keys(p.name, nets), strict=True):
                j = as_judged(terms.judged[net])
                real, fake = (x[0] if len(x) == 1 else x for x in (j.real, j.fake))  # (one input: a tensor)
                with torch.autocast(self.device.type, enabled=False):  # penalties in fp32
                    value = fn(j.forward or self.nets[net], real, fake)
                log(key, value.detach())
                loss = loss + self.ramps.weight(p) * value  # weight * every (ramped: this step's)
        log(f"loss_{phase.name.lower()}", loss)
        return loss

    def _freeze(self, trainable: set[str]) -> None:
        """Networks outside ``trainable`` get no gradient (none computed, none all-reduced)."""
        frozen = self.all_nets - trainable
        if frozen != self.frozen:
            for n in frozen ^ self.frozen:
                flag = n not in frozen
                for p in self.params[n]:  # (module.requires_grad_ walks the module tree each call)
                    p.requires_grad_(flag)
            self.frozen = frozen

    def _clip(self, opt: Any, max_norm: float) -> torch.Tensor:
        """Clip the optimizer's gradients to ``max_norm`` (L2), after fp16's unscale (the
        GradScaler then steps without unscaling again); returns the norm before clipping."""
        scaler = getattr(self.state.accelerator, "scaler", None)
        if scaler is not None:
            scaler.unscale_(getattr(opt, "optimizer", opt))
        params = [p for g in opt.param_groups for p in g["params"]]
        return torch.nn.utils.clip_grad_norm_(params, max_norm).detach()

    def _skip(self, phase: str, loss: torch.Tensor) -> None:
        """Eager: a non-finite loss skipped the rest of the step."""
        s, t = self.state, self.state.config.train
        s.skipped += 1
        self.consecutive_bad += 1
        s.accelerator.print(f"step {s.step + 1}: non-finite loss in phase {phase} ({float(loss.detach())}); "
                            f"update skipped ({s.skipped} skipped so far)")
        if t.nonfinite == "stop" or self.consecutive_bad >= t.max_nonfinite:
            raise nonfinite_stop(s, self.consecutive_bad)

    def _record(self, values: dict[str, torch.Tensor], bad: torch.Tensor, pattern: tuple) -> None:
        """Add this step's values to the sums (nothing for a skipped step), count the step."""
        new = sorted((set(values) | self.penalty_keys) - set(self.keys))
        if new:  # a pattern's first step fixes what it logs (on the fast path it runs eagerly)
            if self.graph and pattern in self.seen:
                raise GanforgeError(f"objective '{self.state.config.objective.name}' logged new values "
                                    f"{new} in a step like an earlier one; a capturable system logs the same "
                                    f"names every step")
            self.keys = self.keys + new
            pad = torch.zeros(len(new), device=self.device)
            self.sums, self.counts = torch.cat([self.sums, pad]), torch.cat([self.counts, pad])
            self.present.clear()
            self.graphs.clear()  # (a phase that starts later: graphs captured before wrote the old sums)
        zero = torch.zeros((), device=self.device)
        stacked = torch.stack([values[k].detach().float() if k in values else zero for k in self.keys])
        mask = tuple(k in values for k in self.keys)  # a lazy penalty's value is not there every step
        present = self.present.get(mask)
        if present is None:  # made once per mask (on the fast path during the eager warm-up)
            present = self.present[mask] = torch.tensor(mask, device=self.device)
        if self.deferred:
            self.sums.add_(torch.where(bad, zero, stacked))
            self.counts.add_((present & ~bad).float())
            self.skipped_t.add_(bad.long())
            self.streak_t.copy_((self.streak_t + 1) * bad.long())
            torch.maximum(self.worst_t, self.streak_t, out=self.worst_t)
            self.step_t.add_(1)
        else:
            self.sums.add_(stacked)
            self.counts.add_(present.float())
            self.consecutive_bad = 0

