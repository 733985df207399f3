"""The runner of the training step: it sets up what the step reads (optimizers, schedules,
penalties per phase, EMA, counters, batches), builds each step's plan (:mod:`ganforge.training.plan`:
which phases run, which lazy penalties are due), and runs the step function
(:mod:`ganforge.training.step_function`, through one explicit :class:`StepContext`: the phases in
order, then EMA and the sums of logged values) eagerly, or warms it up, captures it in a CUDA
graph per plan and replays it.

**Eager** (any device, any number of processes, any plugin): batches come from the DataLoader
(in one process whose device holds an in-memory dataset, a CPU or one GPU: gathered there from
the per-epoch permutation, the same batches without a list of indices per batch). With fused Adam and no GradScaler (``optim.fused`` auto on a GPU) a
non-finite loss skips its update through ``found_inf``, as on the fast path, and is counted on
the device (read when logging): no host synchronisation per phase. Otherwise (foreach Adam, the
CPU default; fp16's GradScaler) a non-finite loss is seen at once (one scalar read per loss)
and skips the rest of the step.

**Graph** (``graph=True``, one CUDA GPU, every part ``capturable``): Small GANs are
launch-bound on a GPU (an eager step issues a few hundred kernels, ~9 ms whatever the batch),
so the step is written as a function of tensors that never move: batches are gathered on the
GPU from the dataset held there (``dataset.fetch(indices)``, with indices from the same
per-epoch permutation the DataLoader uses); optimizers are ``Adam(fused=True,
capturable=True)`` and a non-finite loss skips its update through fused Adam's ``found_inf``
instead of a Python ``if``; the learning-rate schedule, the step counter, EMA and the sums are
updated in place on the device and read only when logging. On a GPU the step is captured in
a CUDA graph after a few warm-up steps and replayed; with lazy penalties each pattern of
penalised runs gets its own graph (one shared memory pool). On a CPU the same code runs
uncaptured: that is what the tests compare with the eager step, bit for bit.
"""
from __future__ import annotations

from typing import Any

import torch

from ganforge.contract.system import penalty_kind
from ganforge.errors import ConfigError, GanforgeError
from ganforge.training.batches import DeviceBatches, endless_batches
from ganforge.training.capture import make_capturable, warm_up
from ganforge.training.ema import EMAUpdater
from ganforge.training.optim import choices, skips_on_found_inf
from ganforge.training.plan import PenaltyTarget, StepPlan, plan_step
from ganforge.training.schedules import LRSchedules, Ramps
from ganforge.training.step_function import Freezer, StepContext, Tally, nonfinite_stop, penalty_keys, run_step

__all__ = ["TrainStep", "nonfinite_stop", "penalty_kind"]  # (nonfinite_stop: from step_function)


class TrainStep:
    """Call once per training step. ``take()`` returns the summed logged values since its last
    call and how many steps each sum holds; ``sync()`` brings device-side counters into the
    state (before a checkpoint).

    :param graph: the fast path's bookkeeping (batches fetched on the device, ``found_inf``
        skips, device-side counters); ``capture``: also capture it in CUDA graphs.
    :param device_batches: gather batches on the device from the per-epoch permutation instead
        of the DataLoader (the same batches in the same order; default: on the fast path, and
        eagerly in one process whose device holds the data, a CPU included: no per-batch list of
        indices through the DataLoader).
    """

    def __init__(self, state: Any, penalties: list, *, graph: bool = False, capture: bool = False,
                 warmup: int = 3, device_batches: bool | None = None):
        self.state, self.penalties, self.graph, self.capture, self.warmup = state, penalties, graph, capture, warmup
        cfg, acc, system = state.config, state.accelerator, state.system
        self.device = device = acc.device
        self.world = acc.num_processes
        data = getattr(state.dataset, "data", None)
        if device_batches is None:
            device_batches = graph or (self.world == 1 and callable(getattr(state.dataset, "fetch", None))
                                       and isinstance(data, torch.Tensor) and data.device == device)
        self.device_batches = device_batches
        self.system, self.phases = system, system.phases
        # Accelerate's optimizer wrapper re-checks optional packages on every zero_grad/step
        # (~1 ms per step on a 2-core CPU); without a GradScaler (fp16) it only forwards to
        # the wrapped optimizer, so call that directly.
        direct = graph or getattr(acc, "scaler", None) is None
        opts = {n: (o.optimizer if direct else o) for n, o in state.optimizers.items()}
        if graph:
            for opt in opts.values():
                make_capturable(opt)
        # deferred skips: a non-finite loss skips its update through fused Adam's found_inf and
        # is counted on the device (no host read per phase); needs fused Adam and no GradScaler
        fused = all(g.get("fused") for o in opts.values() for g in o.param_groups)
        self.deferred = graph or (fused and getattr(acc, "scaler", None) is None)
        if self.deferred:  # the skip relies on the optimizer reading found_inf: checked, not assumed
            ignoring = [n for n, o in opts.items() if not skips_on_found_inf(o)]
            if ignoring and graph:
                raise GanforgeError(f"optimizer(s) {', '.join(ignoring)} ({type(opts[ignoring[0]]).__name__}, torch "
                                    f"{torch.__version__}) step even when found_inf is set, so the graph step could "
                                    f"not skip a non-finite update; set train.cuda_graph=false")
            if ignoring:
                self.deferred = False
                acc.print(f"optimizer(s) {', '.join(ignoring)} ignore found_inf in this torch: a non-finite loss is "
                          f"seen by reading it on the host instead")
        self.plain = {n: acc.unwrap_model(m) for n, m in state.nets.items()}  # once: ~0.4 ms a call
        # which penalties apply to which discriminator in each phase
        self.targets = [[PenaltyTarget(p, fn, tuple(nets)) for p, fn in penalties
                         if (nets := [n for n in ph.penalize if (not p.networks or n in p.networks)
                                      and system.networks[n].kind == penalty_kind(fn)])]
                        for ph in self.phases]
        for p, fn in penalties:  # a penalty that applies to no network of this system is a mistake
            if not any(p is t.penalty for per_phase in self.targets for t in per_phase):
                raise ConfigError(f"penalty '{p.name}' applies to {penalty_kind(fn)} networks, and objective "
                                  f"'{cfg.objective.name}' penalises none in any phase"
                                  + (f" among {', '.join(p.networks)}" if p.networks else "")
                                  + "; remove it or choose a penalty for the networks it penalises")
        logged_penalties = {k for per_phase in self.targets for t in per_phase for k in penalty_keys(t.penalty.name, t.nets)}
        # batches: each run of a new_batch phase draws one (the first phase always does)
        self.fresh = sum(ph.repeats if ph.new_batch else int(i == 0) for i, ph in enumerate(self.phases))
        if self.device_batches:
            self.source = DeviceBatches(state, self.fresh, cfg.data.batch_size)
            self.per_epoch = self.source.per_epoch
            indices = self.source.indices
            batch = lambda k: state.dataset.fetch(indices[k])  # noqa: E731 - gathered on the device
        else:
            batches = endless_batches(state, state.loader)
            batch = lambda k: next(batches)  # noqa: E731
        # learning rates (a scheduled rate on the fast path is a tensor, or capture would freeze
        # today's value) and gradient clipping, per optimizer
        chosen = choices(cfg, system)
        schedules = {n: c.schedule for n, c in chosen.items()}
        per_epoch = self._steps_per_epoch() if any(c and c.type == "exponential" and c.per == "epoch"
                                                   for c in schedules.values()) else None
        self.graphs: dict[StepPlan, torch.cuda.CUDAGraph] = {}
        self.seen: set[StepPlan] = set()  # plans run at least once (warm)
        self.checked: set[StepPlan] = set()  # and run once more, watched for host traffic
        self.pool = None
        self.calls = 0
        trainable = [set(p.trainable or system.optimizers[p.optimizer].networks) for p in self.phases]
        keeps = [set(p.keeps) - t for p, t in zip(self.phases, trainable, strict=True)]
        if any(keeps) and self.world > 1 and cfg.train.accumulate > 1:
            raise ConfigError(f"objective '{cfg.objective.name}' keeps a network's output from one phase for the next "
                              f"(Phase.keeps), which with several processes needs train.accumulate=1 (DDP all-reduces "
                              f"a network in the backward after each forward); got {cfg.train.accumulate}")
        self.ctx = StepContext(
            state=state, accelerator=acc, device=device, world=self.world, system=system, phases=self.phases,
            nets=state.nets, opts=opts, trainable=trainable,
            unfrozen=[t | k for t, k in zip(trainable, keeps, strict=True)],
            targets=self.targets, clips={n: c.clip for n, c in chosen.items() if c.clip},
            accumulate=cfg.train.accumulate, deferred=self.deferred, batch=batch, autocast=state.autocast,
            augment=state.augment,
            lrs=LRSchedules(opts, state.base_lrs, schedules, cfg.train.steps, device=device, graph=graph,
                            steps_per_epoch=per_epoch),
            ramps=Ramps(opts, {n: c.ramps for n, c in chosen.items()}, penalties, cfg.train.steps,
                        device=device, graph=graph),  # penalty weights, betas, weight decay
            ema=EMAUpdater(state, self.plain, deferred=self.deferred, images_per_step=cfg.data.batch_size * self.world),
            freezer=Freezer({n: list(m.parameters()) for n, m in state.nets.items()}),
            tally=Tally(device, state.step, state.skipped, logged_penalties),
            graph=graph, seen=self.seen, on_new_keys=self.graphs.clear)
        self._skipped_seen = state.skipped

    def _reduce(self, t: torch.Tensor) -> torch.Tensor:
        return self.state.accelerator.reduce(t, reduction="sum") if self.world > 1 else t

    def _steps_per_epoch(self) -> float:
        """Generator steps per epoch of the training data (each step draws ``fresh`` batches).
        A dataset whose items are crops may define its epoch itself (``epoch_items``: the items
        an epoch means, e.g. ``audio_folder``'s one crop per training clip, HiFi-GAN's epoch);
        otherwise an epoch is one pass over its items."""
        items = getattr(self.state.dataset, "epoch_items", None)
        if items:
            world = self.state.accelerator.num_processes
            return max(1, items // (self.state.config.data.batch_size * world)) / self.fresh
        try:
            batches = self.per_epoch if self.device_batches else len(self.state.loader)
        except TypeError:
            raise ConfigError(f"a schedule per epoch needs a dataset with a length; dataset "
                              f"'{self.state.config.data.name}' streams. Use per: step") from None
        return batches / self.fresh

    # ------------------------------------------------------------------ outside the graph
    def plan(self) -> StepPlan:
        """This step's plan: which phases run (``Phase.start``/``stop``) and which penalties are
        due in each run of each (lazy regularisation). Each plan is its own CUDA graph on the
        fast path."""
        return plan_step(self.phases, self.targets, self.state.phase_steps, self.state.step)

    def _step(self, plan: StepPlan) -> None:
        run_step(self.ctx, plan)

    def __call__(self) -> None:
        plan = self.plan()
        running = plan.running
        self.system.running = frozenset(ph.name for ph, on in zip(self.phases, running, strict=True) if on)
        if self.device_batches:
            self.source.fill(self._batches(running))
        graph = self.graphs.get(plan)
        if graph is not None:
            graph.replay()
        elif self.capture and self.calls >= self.warmup and plan in self.checked:
            self._capture(plan)
            self.graphs[plan].replay()
        elif self.capture:
            warm_up(self, plan)
        else:
            try:
                self._step(plan)
            finally:  # an error in a phase leaves no network frozen
                self.ctx.freezer.thaw()
        self.seen.add(plan)
        self.calls += 1
        aug = self.state.augment
        if aug is not None and aug.adaptive:  # outside any graph: e.g. ADA's p, every few steps
            aug.augment.update(self.state.step + 1, self._reduce)
        for ph, on in zip(self.phases, running, strict=True):  # a skipped step still counts its phases' runs
            if on:
                self.state.phase_steps[ph.name] = self.state.phase_steps.get(ph.name, 0) + ph.repeats

    def _batches(self, running: tuple[bool, ...]) -> int:
        """Batches one step draws with these phases running (the first running phase draws one)."""
        active = [ph for ph, on in zip(self.phases, running, strict=True) if on]
        return sum(ph.repeats if ph.new_batch else int(i == 0) for i, ph in enumerate(active))

    def _capture(self, plan: StepPlan) -> None:
        torch.cuda.synchronize(self.device)
        graph = torch.cuda.CUDAGraph()
        for opt in self.ctx.opts.values():
            opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph, pool=self.pool):
            self._step(plan)
        self.pool = graph.pool()
        self.graphs[plan] = graph
        if len(self.graphs) == 1:
            self.state.accelerator.print("fast path: training step captured in a CUDA graph")

    def take(self) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
        """Sums of the logged values over the good steps since the last call, and how many
        steps each sum holds (a lazy penalty's value is there only when it was computed)."""
        self.sync()
        tally = self.ctx.tally
        counts = dict(zip(tally.keys, tally.counts.long().tolist(), strict=True))
        sums = {k: tally.sums[i].clone() for i, k in enumerate(tally.keys)}
        tally.sums.zero_()
        tally.counts.zero_()
        tally.worst_t.copy_(tally.streak_t)
        return sums, counts

    def sync(self) -> None:
        """Copy the device-side skipped-step count into the state; stop the run as the eager
        step would when non-finite steps exceed the settings."""
        if not self.deferred:
            return
        s, t, tally = self.state, self.state.config.train, self.ctx.tally
        s.skipped = int(tally.skipped_t)
        new = s.skipped - self._skipped_seen
        self._skipped_seen = s.skipped
        if new:
            s.accelerator.print(f"{new} step(s) with a non-finite loss skipped before step {s.step} "
                                f"({s.skipped} so far)")
            worst = int(torch.maximum(tally.worst_t, tally.streak_t))
            if t.nonfinite == "stop" or worst >= t.max_nonfinite:
                raise nonfinite_stop(s, worst)

