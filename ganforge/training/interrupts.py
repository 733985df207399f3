"""Stopping a run cleanly: SIGINT/SIGTERM on any rank collected instead of dying mid-step, and
agreed across ranks so every rank stops after the same step with one checkpoint; and the clock
of ``log.checkpoint_minutes``. Used by the loop in :mod:`ganforge.training.engine`."""
from __future__ import annotations

import contextlib
import signal
import threading
import time
from typing import Any

import torch
from accelerate.utils import broadcast

__all__ = ["CheckpointClock", "Signals", "catch_interrupts"]


class Signals:
    """The SIGINT/SIGTERM this process received, and the decision all processes share."""

    def __init__(self):
        self.received: list[int] = []
        self.group, self.pending = None, None

    def agreed(self, acc: Any) -> str | None:
        """The signal that stops the run after this step, or None. With several processes
        every rank must stop after the same step (a rank that stopped alone would hang the
        others' collectives), so the ranks share their flags with an all-reduce over a gloo
        group of host tensors: started asynchronously after one step and collected after the
        next, it costs no device synchronisation and a stop comes one step after the signal."""
        number = self.received[0] if self.received else 0
        if acc.num_processes == 1:
            return signal.Signals(number).name if number else None
        import torch.distributed as dist

        if self.group is None:  # collective: every rank creates it at its first step
            self.group = dist.new_group(backend="gloo")
        decided = 0
        if self.pending is not None:
            work, flag = self.pending
            work.wait()
            decided = int(flag[0])
        flag = torch.tensor([number], dtype=torch.int64)
        self.pending = (dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group, async_op=True), flag)
        return signal.Signals(decided).name if decided else None

    def close(self) -> None:
        """Collect an all-reduce still in flight (every rank started it), before the process
        group goes away."""
        if self.pending is not None:
            self.pending[0].wait()
            self.pending = None


@contextlib.contextmanager
def catch_interrupts():
    """Collect SIGINT/SIGTERM instead of dying mid-step (the loop then checkpoints and ends), on
    every rank; the previous handlers come back however the loop ends, also on an error."""
    signals = Signals()

    def on_signal(signum, _frame):
        signals.received.append(signum)

    in_main_thread = threading.current_thread() is threading.main_thread()
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)} if in_main_thread else {}
    try:
        yield signals
        signals.close()
    finally:
        for s, h in old.items():
            signal.signal(s, h)


class CheckpointClock:
    """``log.checkpoint_minutes``: a checkpoint when that much wall time has passed since the
    last one, so a crash or a kill never loses more. Looked at on log steps only; every rank
    takes rank 0's decision (saving is collective)."""

    def __init__(self, minutes: float, acc: Any):
        self.seconds, self.acc = minutes * 60, acc
        self.reset()

    def reset(self) -> None:
        self.start = time.monotonic()

    def due(self, log_step: bool) -> bool:
        if not self.seconds or not log_step:
            return False
        flag = torch.tensor(float(time.monotonic() - self.start >= self.seconds), device=self.acc.device)
        if self.acc.num_processes > 1:
            flag = broadcast(flag, from_process=0)
        return bool(flag > 0)
