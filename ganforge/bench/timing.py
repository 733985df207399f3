"""Timing the engine and plain loops for ``ganforge bench``: the engine timed between two of its
own generator steps by a lifecycle-hook plugin, alone (:func:`time_ganforge`) or interleaved in
blocks with a loop (:func:`time_interleaved`); a loop's steps; the engine's data loader alone;
and the FLOPs of one step."""
from __future__ import annotations

import resource
import tempfile
import time
from typing import Any

import torch

from ganforge.bench import stats as bench_stats
from ganforge.bench.loops import eager_loop
from ganforge.contract.hookspecs import hookimpl
from ganforge.recipe.types import Recipe

__all__ = ["count_flops", "loader_images_per_s", "peak_memory", "sync", "time_ganforge", "time_interleaved",
           "time_loop"]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process-wide, MiB


class _Timer:
    """A lifecycle-hook plugin: wall time between generator step ``warmup`` and the last."""

    def __init__(self, warmup: int, total: int):
        self.warmup, self.total, self.start, self.end = warmup, total, None, None

    @hookimpl
    def ganforge_step_end(self, state):
        if state.step in (self.warmup, self.total):
            sync(state.accelerator.device)
            now = time.perf_counter()
            if state.step == self.warmup:
                self.start = now
            else:
                self.end = now


class _Interleaved:
    """A lifecycle-hook plugin that times the engine in blocks of ``block`` generator steps and,
    between two blocks, runs one block of the bare loop (timed on its own): engine, loop,
    engine, loop, ... in one process, so a slow spell of the machine hits both sides of a pair.
    The engine's block time runs from the end of one loop block to the end of its own last step."""

    def __init__(self, make_loop, warmup: int, block: int):
        self.make_loop, self.warmup, self.block = make_loop, warmup, block
        self.engine: list[float] = []
        self.loop: list[float] = []
        self.memory = {"ganforge": 0.0, "eager": 0.0}
        self.load = bench_stats.OtherLoad()
        self.step, self.start, self.device = None, None, None

    def _mark(self, side: str) -> None:
        self.memory[side] = max(self.memory[side], peak_memory(self.device))
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()

    @hookimpl
    def ganforge_step_end(self, state):
        s = state.step
        if s < self.warmup or (s - self.warmup) % self.block:
            return
        self.device = state.accelerator.device
        sync(self.device)
        if self.start is None:  # the end of the engine's warm-up: build and warm up the loop
            self.step = self.make_loop(state)
            for _ in range(self.warmup):
                self.step()
            self.load.start()
        else:
            self.engine.append(time.perf_counter() - self.start)
            self._mark("ganforge")
            sync(self.device)
            begin = time.perf_counter()
            for _ in range(self.block):
                self.step()
            sync(self.device)
            self.loop.append(time.perf_counter() - begin)
            self._mark("eager")
        sync(self.device)
        self.start = time.perf_counter()


def time_interleaved(recipe: Recipe, make_loop, warmup: int, block: int, rounds: int) -> dict[str, Any]:
    """The engine and a loop (``make_loop(state)`` gives its ``step()``), ``rounds`` pairs of
    ``block`` steps each, interleaved (:class:`_Interleaved`)."""
    from ganforge.training.engine import train
    from ganforge.contract.manager import PluginManager

    pm = PluginManager()
    timer = _Interleaved(make_loop, warmup, block)
    pm.register(timer, name="bench-timer")
    total = warmup + block * rounds
    with tempfile.TemporaryDirectory() as tmp:
        recipe.out_dir, recipe.train.steps = tmp, total
        recipe.log.sample_every = recipe.log.eval_every = recipe.log.checkpoint_every = 0
        recipe.log.progress, recipe.metrics, recipe.log.every = False, [], total
        recipe.log.checkpoint_minutes = 0
        state = train(recipe, plugins=pm)
    if len(timer.engine) < rounds:
        from ganforge.errors import GanforgeError

        raise GanforgeError(f"training stopped at step {state.step} before the {total} steps to time "
                            f"(interrupted?)")
    graphs = state.stepper.graphs  # the CUDA graphs the step captured
    path = (f"CUDA graph ({len(graphs)} captured)" if graphs else
            "fast step, not captured" if state.stepper.graph else "eager step")
    return {"engine": timer.engine, "loop": timer.loop, "memory": timer.memory, "other_load": timer.load.stop(),
            "device": state.accelerator.device, "path": path, "captured": bool(graphs),
            "precision": state.accelerator.mixed_precision, "autocast_cache": cache_of(state)}


def cache_of(state: Any) -> bool | None:
    """Whether the engine's autocast used the weight-cast cache (None: no autocast)."""
    keywords = getattr(state.autocast, "keywords", None)
    return None if keywords is None else keywords.get("cache_enabled")


def time_ganforge(recipe: Recipe, warmup: int, steps: int) -> dict[str, Any]:
    from ganforge.training.engine import train
    from ganforge.contract.manager import PluginManager

    pm = PluginManager()
    timer = _Timer(warmup, warmup + steps)
    pm.register(timer, name="bench-timer")
    with tempfile.TemporaryDirectory() as tmp:
        recipe.out_dir, recipe.train.steps = tmp, warmup + steps
        recipe.log.sample_every = recipe.log.eval_every = recipe.log.checkpoint_every = 0
        recipe.log.progress, recipe.metrics, recipe.log.every = False, [], warmup + steps
        state = train(recipe, plugins=pm)
    if timer.end is None:
        from ganforge.errors import GanforgeError

        raise GanforgeError(f"training stopped at step {state.step} before the {warmup + steps} "
                            f"steps to time (interrupted?)")
    graphs = state.stepper.graphs  # the CUDA graphs the step captured
    path = (f"CUDA graph ({len(graphs)} captured)" if graphs else
            "fast step, not captured" if state.stepper.graph else "eager step")
    return {"seconds": timer.end - timer.start, "device": state.accelerator.device, "path": path,
            "captured": bool(graphs), "precision": state.accelerator.mixed_precision}


def time_loop(step, device: torch.device, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return time.perf_counter() - start


def loader_images_per_s(recipe: Recipe, device: torch.device, batches: int) -> float | None:
    """Images/s of the engine's DataLoader alone (its workers, pinned memory, copy to the
    device), for datasets read from files; None for datasets held in memory (no loader)."""
    from ganforge.training.batches import make_loader
    from ganforge.contract.manager import PluginManager

    dataset = PluginManager().registry.build("dataset", recipe.data.name, recipe.data.args,
                                             root=recipe.data.root, download=False)
    if isinstance(getattr(dataset, "data", None), torch.Tensor):
        return None
    loader = make_loader(recipe, dataset, device)
    seen, start, it = 0, None, iter(loader)
    for i in range(batches + 2):
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        batch = batch[0] if isinstance(batch, (tuple, list)) else batch
        batch = batch.to(device, non_blocking=True)
        if i == 1:  # workers started and the first batches done: time from here
            sync(device)
            start = time.perf_counter()
        elif i > 1:
            seen += len(batch)
    sync(device)
    return seen / (time.perf_counter() - start)


def count_flops(recipe: Recipe, device: torch.device) -> int:
    """FLOPs of one generator step (n_critic D updates + one G update) of the eager loop."""
    from torch.utils.flop_counter import FlopCounterMode

    step = eager_loop(recipe, device)
    step()  # optimizer state exists: count a steady-state step
    counter = FlopCounterMode(display=False)
    # the whole step's total, not per module: the module tracker's backward hooks make
    # autograd.grad of a penalty (R1's gradient of D's output) fail ("A leaf node was passed to
    # _will_engine_execute_node"); the totals are what the table uses
    counter.mod_tracker = _WholeStep()
    with counter:
        step()
    return counter.get_total_flops()


class _WholeStep:
    """A stand-in for FlopCounterMode's module tracker: every FLOP belongs to "Global"."""

    parents = frozenset({"Global"})

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
