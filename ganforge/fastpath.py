"""The fast path: the whole training step captured once in a CUDA graph, then replayed.

Small GANs are launch-bound on a GPU: an eager step issues a few hundred kernels, each costing
the CPU several microseconds to launch, so a batch-64 MNIST step takes ~9 ms whatever the
model does (issue #4). Here the step (``n_critic`` D updates, one G update, the EMA update,
the bookkeeping for logs) is written as a function of tensors that never move:

- the batches are gathered on the GPU from the dataset held there as uint8
  (``dataset.fetch(indices)``), with indices copied in from the same per-epoch permutation the
  eager DataLoader uses, so both paths see the same batches in the same order;
- both optimizers are ``Adam(fused=True, capturable=True)``; a non-finite loss skips its
  update through fused Adam's ``found_inf`` flag instead of a Python ``if``;
- EMA, the learning-rate schedule, the step counter and the sums of logged values are updated
  in place on the device; Python reads them only when it logs.

It is used on one CUDA GPU when every part allows it (see :func:`reasons_against`); otherwise
the engine runs :class:`ganforge.engine.EagerStep` and prints why once. ``train.cuda_graph``
forces either way. With lazy penalties (``every > 1``) each distinct pattern of penalised D
steps gets its own graph, captured the first time it comes round again (they share one memory
pool). On a CPU the same function runs without capture: that is what the tests compare
against the eager step.
"""
from __future__ import annotations

from typing import Any

import torch

__all__ = ["GraphStep", "reasons_against"]


def reasons_against(state: Any, penalties: list) -> list[str]:
    """Why the step cannot be captured in this run (an empty list: it can)."""
    cfg, acc, dataset = state.config, state.accelerator, state.dataset
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
    loss = getattr(state.objective, "loss", None)
    if loss is not None and not getattr(loss, "capturable", False):
        reasons.append(f"loss '{cfg.loss.name}' does not declare capturable = True")
    if not getattr(state.objective, "capturable", False):
        reasons.append(f"objective '{cfg.objective.name}' does not declare capturable = True")
    for p, fn in penalties:
        if not getattr(fn, "capturable", False):
            reasons.append(f"penalty '{p.name}' does not declare capturable = True")
    return reasons


def _make_capturable(opt: torch.optim.Optimizer) -> None:
    """Fused, capturable Adam, also after loading a checkpoint written by the eager step
    (``load_state_dict`` restores the saved flags, and Adam's step counts on the CPU)."""
    for group in opt.param_groups:
        group["fused"], group["capturable"] = True, True
    for param, values in opt.state.items():
        if torch.is_tensor(values.get("step")):
            values["step"] = values["step"].to(param.device, torch.float32)


class GraphStep:
    """One training step as a function of static tensors; captured in CUDA graphs on a GPU.

    Call it once per generator step. ``take()`` returns the summed logged values since the
    last call (and synchronises the skipped-step count into the state).
    """

    def __init__(self, state: Any, penalties: list, *, capture: bool, warmup: int = 3):
        from ganforge.engine import discriminator_loss, generator_loss

        self.state, self.penalties, self.capture, self.warmup = state, penalties, capture, warmup
        self._d_loss, self._g_loss = discriminator_loss, generator_loss
        cfg, acc = state.config, state.accelerator
        self.device = device = acc.device
        self.opt_d, self.opt_g = state.opt_d.optimizer, state.opt_g.optimizer
        for opt in (self.opt_d, self.opt_g):
            _make_capturable(opt)
        self.G_plain = acc.unwrap_model(state.generator)
        self.batch_size, self.n_critic = cfg.data.batch_size, cfg.train.n_critic
        self.per_epoch = len(state.dataset) // self.batch_size  # drop_last, like the loader
        self.indices = torch.zeros(self.n_critic, self.batch_size, dtype=torch.long, device=device)
        self._perm_epoch, self._perm = -1, None
        self.step_t = torch.tensor(state.step, device=device)  # generator steps done
        self.skipped_t = torch.tensor(state.skipped, device=device)
        self.streak_t = torch.zeros((), dtype=torch.long, device=device)  # bad steps in a row
        self.worst_t = torch.zeros((), dtype=torch.long, device=device)  # longest streak in window
        self.keys: list[str] | None = None
        self.sums: torch.Tensor | None = None  # per logged value: sum over good steps
        self.counts: torch.Tensor | None = None  # and the number of steps in that sum
        self._skipped_seen = state.skipped
        # a decaying learning rate must be a tensor, or capture would freeze today's value
        self.lr_base: list[tuple[torch.Tensor, float]] = []
        if cfg.optim.lr_decay == "linear":
            dtype = torch.float32 if device.type == "cuda" else torch.float64  # CPU: exact
            for opt, lr in ((self.opt_d, cfg.optim.lr_d), (self.opt_g, cfg.optim.lr_g)):
                for group in opt.param_groups:
                    group["lr"] = torch.tensor(lr, dtype=dtype, device=device)
                    self.lr_base.append((group["lr"], lr))
        ema = state.ema
        if ema is not None:
            ema.n_averaged = ema.n_averaged.to(device)  # AveragedModel keeps it on the CPU
            pairs = list(zip([*ema.module.parameters(), *ema.module.buffers()],
                             [*self.G_plain.parameters(), *self.G_plain.buffers()], strict=True))
            self.ema_float = [(e.detach(), m.detach()) for e, m in pairs if e.is_floating_point()]
            self.ema_other = [(e.detach(), m.detach()) for e, m in pairs if not e.is_floating_point()]
        self.graphs: dict[tuple[bool, ...], torch.cuda.CUDAGraph] = {}
        self.seen: set[tuple[bool, ...]] = set()  # patterns run at least once (warm)
        self.present: dict[tuple[bool, ...], torch.Tensor] = {}  # which logged values a pattern has
        self.pool = None
        self.calls = 0

    # ------------------------------------------------------------------ outside the graph
    def _epoch_perm(self, epoch: int) -> torch.Tensor:
        """The eager loader's order for ``epoch``: Accelerate's seedable sampler draws
        ``randperm(N)`` from a generator seeded with ``seed + epoch``."""
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.state.config.seed + epoch)
            self._perm = torch.randperm(len(self.state.dataset), generator=g).to(self.device)
            self._perm_epoch = epoch
        return self._perm

    def _fill_indices(self) -> None:
        s, b = self.state, self.batch_size
        for k in range(self.n_critic):
            if s.batch_in_epoch >= self.per_epoch:
                s.epoch, s.batch_in_epoch = s.epoch + 1, 0
            perm = self._epoch_perm(s.epoch)
            self.indices[k].copy_(perm[s.batch_in_epoch * b:(s.batch_in_epoch + 1) * b], non_blocking=True)
            s.batch_in_epoch += 1

    def _pattern(self) -> tuple[bool, ...]:
        """Which penalties run in each of this step's D updates (lazy regularisation)."""
        d0 = self.state.d_steps
        return tuple((d0 + k + 1) % p.every == 0 for k in range(self.n_critic) for p, _ in self.penalties)

    def __call__(self) -> None:
        self._fill_indices()
        pattern = self._pattern()
        graph = self.graphs.get(pattern)
        if graph is not None:
            graph.replay()
        elif self.capture and self.calls >= self.warmup and pattern in self.seen:
            self._capture(pattern)
            self.graphs[pattern].replay()
        else:
            self._eager(pattern)
        self.seen.add(pattern)
        self.calls += 1
        self.state.d_steps += self.n_critic

    def _eager(self, pattern: tuple[bool, ...]) -> None:
        if self.device.type != "cuda":
            self._step(pattern)
            return
        side = torch.cuda.Stream(self.device)  # warm-up off the default stream, as for capture
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            self._step(pattern)
        torch.cuda.current_stream(self.device).wait_stream(side)

    def _capture(self, pattern: tuple[bool, ...]) -> None:
        torch.cuda.synchronize(self.device)
        graph = torch.cuda.CUDAGraph()
        self.opt_d.zero_grad(set_to_none=True)
        self.opt_g.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph, pool=self.pool):
            self._step(pattern)
        self.pool = graph.pool()
        self.graphs[pattern] = graph
        if len(self.graphs) == 1:
            self.state.accelerator.print("fast path: training step captured in a CUDA graph")

    def take(self) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
        """As :meth:`ganforge.engine.EagerStep.take`; stops the run as the eager loop would
        when non-finite steps exceed the settings."""
        self.sync()
        if self.sums is None:
            return {}, {}
        counts = dict(zip(self.keys, self.counts.long().tolist(), strict=True))
        sums = {k: self.sums[i].clone() for i, k in enumerate(self.keys)}
        self.sums.zero_()
        self.counts.zero_()
        self.worst_t.copy_(self.streak_t)
        return sums, counts

    def sync(self) -> None:
        """Copy the device-side skipped-step count into the state (before checkpoints)."""
        s, t = self.state, self.state.config.train
        s.skipped = int(self.skipped_t)
        new = s.skipped - self._skipped_seen
        self._skipped_seen = s.skipped
        if new:
            s.accelerator.print(f"{new} step(s) with a non-finite loss skipped before step {s.step} "
                                f"({s.skipped} so far)")
            worst = int(torch.maximum(self.worst_t, self.streak_t))
            if t.nonfinite == "stop" or worst >= t.max_nonfinite:
                from ganforge.engine import nonfinite_stop

                raise nonfinite_stop(s, worst)

    # ------------------------------------------------------------- the captured function
    def _step(self, pattern: tuple[bool, ...]) -> None:
        """n_critic D updates, the G update, EMA and log sums; no Python branch on a value."""
        s, cfg, acc = self.state, self.state.config, self.state.accelerator
        D = s.discriminator
        for lr_t, base in self.lr_base:
            lr_t.copy_(base * (1.0 - self.step_t.to(lr_t.dtype) / cfg.train.steps))
        bad = torch.zeros((), dtype=torch.bool, device=self.device)
        values: dict[str, torch.Tensor] = {}  # the last D step's, and any penalty computed
        n_pen = len(self.penalties)
        for k in range(self.n_critic):
            batch = s.dataset.fetch(self.indices[k])
            flags = pattern[k * n_pen:(k + 1) * n_pen]
            loss_d, stats = self._d_loss(s, batch, [pf for pf, on in zip(self.penalties, flags, strict=True) if on])
            values.update(stats)
            self.opt_d.zero_grad(set_to_none=True)
            bad = bad | ~torch.isfinite(loss_d.detach())
            acc.backward(loss_d)
            self._apply(self.opt_d, bad)
        D.requires_grad_(False)  # D frozen: no gradients for it in the G step
        loss_g, g_stats = self._g_loss(s, batch)
        self.opt_g.zero_grad(set_to_none=True)
        bad = bad | ~torch.isfinite(loss_g.detach())
        acc.backward(loss_g)
        self._apply(self.opt_g, bad)
        D.requires_grad_(True)
        self._ema(bad)
        # bookkeeping: log sums over good steps, skipped-step counters, the step counter
        values.update(loss_d=loss_d, loss_g=loss_g, **g_stats)
        if self.keys is None:  # the first (eager) step fixes what is logged
            names = set(values) | {f"penalty_{p.name}" for p, _ in self.penalties}
            self.keys = sorted(names)
            self.sums = torch.zeros(len(self.keys), device=self.device)
            self.counts = torch.zeros(len(self.keys), device=self.device)
        zero = torch.zeros((), device=self.device)
        stacked = torch.stack([values[k].detach().float() if k in values else zero for k in self.keys])
        present = self.present.get(pattern)
        if present is None:  # made on the pattern's first, eager run: a copy from the host
            present = self.present[pattern] = torch.tensor([k in values for k in self.keys], device=self.device)
        self.sums.add_(torch.where(bad, zero, stacked))
        self.counts.add_((present & ~bad).float())
        self.skipped_t.add_(bad.long())
        self.streak_t.copy_((self.streak_t + 1) * bad.long())
        torch.maximum(self.worst_t, self.streak_t, out=self.worst_t)
        self.step_t.add_(1)

    @staticmethod
    def _apply(opt: torch.optim.Optimizer, bad: torch.Tensor) -> None:
        opt.found_inf = bad.float()  # fused Adam leaves weights and moments as they were if 1
        try:
            opt.step()
        finally:
            del opt.found_inf

    @torch.no_grad()
    def _ema(self, bad: torch.Tensor) -> None:
        """torch's AveragedModel EMA update (copy before ema_start and at the first average,
        lerp after), with no Python branch on the step."""
        ema, t = self.state.ema, self.state.config.train
        if ema is None:
            return
        before_start = self.step_t < t.ema_start
        copy = before_start | (ema.n_averaged == 0)
        if self.ema_float:
            e_list, m_list = zip(*self.ema_float)
            lerped = torch._foreach_lerp(list(e_list), list(m_list), 1 - t.ema)
            for (e, m), new in zip(self.ema_float, lerped, strict=True):
                e.copy_(torch.where(bad, e, torch.where(copy, m, new)))
        for e, m in self.ema_other:
            new = e * t.ema + m * (1 - t.ema)
            e.copy_(torch.where(bad, e, torch.where(copy, m, new).to(e.dtype)))
        ema.n_averaged.add_((~bad & ~before_start).to(ema.n_averaged.dtype))
