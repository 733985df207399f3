"""The statistics of ``ganforge bench``: a ratio of two interleaved timings with its own
uncertainty, and the machine facts that go with it.

The engine and the bare loop run in short blocks, interleaved A/B/A/B in one process, so a slow
spell of a shared machine hits both sides of a pair alike. Each pair gives one ratio (engine
seconds / loop seconds); the reported ratio is the **median of the pairs' ratios**, with a
**percentile bootstrap 95% interval** (pairs resampled with replacement, seeded, 2,000
resamples): the median is robust to the odd slow block, and resampling pairs keeps each pair's
shared conditions together. pyperf's methods were the reference (many short runs, median and
spread, warnings for an unstable machine); pyperf itself is not used because the engine is
timed inside its own training loop, between two of its steps, which pyperf's worker model
cannot do.

A run is flagged **unstable** when the interval is wider than ±3% of the ratio, or when either
side's block times are bimodal: Sarle's bimodality coefficient above 0.6 (a uniform spread, such
as a slow drift, gives 5/9) and the two clusters of the best split each holding 20% of the blocks,
more than 5% apart. Outliers are blocks outside the Tukey fences (1.5 IQR) of their side.
"""
from __future__ import annotations

import math
import os
import random
import statistics
from pathlib import Path
from typing import Any

import torch

from ganforge.training.device import cpu_times
from ganforge.training.precision import native_cpu_bf16

__all__ = ["OtherLoad", "bimodal", "machine_facts", "outliers", "paired_ratio", "UNSTABLE_HALF_WIDTH"]

UNSTABLE_HALF_WIDTH = 0.03  # a ratio known no better than +-3% is not a figure to quote


def _percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile of already sorted values (q in [0, 1])."""
    pos = q * (len(sorted_values) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def bootstrap_interval(values: list[float], stat=statistics.median, resamples: int = 2000,
                       confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat`` over ``values`` (resampled with replacement)."""
    rng = random.Random(seed)
    n = len(values)
    draws = sorted(stat([values[rng.randrange(n)] for _ in range(n)]) for _ in range(resamples))
    tail = (1.0 - confidence) / 2
    return _percentile(draws, tail), _percentile(draws, 1.0 - tail)


def bimodality_coefficient(times: list[float]) -> float:
    """Sarle's bimodality coefficient (sample skewness and excess kurtosis, bias-corrected):
    5/9 for a uniform distribution, 1/3 for a normal one, towards 1 for two separate modes."""
    n = len(times)
    mean = statistics.fmean(times)
    m2 = sum((x - mean) ** 2 for x in times) / n
    if m2 == 0:
        return 0.0
    m3 = sum((x - mean) ** 3 for x in times) / n
    m4 = sum((x - mean) ** 4 for x in times) / n
    g = m3 / m2 ** 1.5 * math.sqrt(n * (n - 1)) / (n - 2)
    k = ((n + 1) * (m4 / m2 ** 2 - 3) + 6) * (n - 1) / ((n - 2) * (n - 3))
    return (g * g + 1) / (k + 3 * (n - 1) ** 2 / ((n - 2) * (n - 3)))


def bimodal(times: list[float]) -> bool:
    """Two modes, not one spread: Sarle's coefficient above 0.6 (a uniform spread gives 5/9,
    a drifting machine about that), and the best two-cluster split has at least 20% of the
    times on each side, with means more than 5% apart (a lone slow block is an outlier, not a
    mode). Needs 8 times or more."""
    xs = sorted(times)
    n = len(xs)
    if n < 8 or bimodality_coefficient(xs) <= 0.6:
        return False
    cut = min(range(1, n), key=lambda c: sum((x - statistics.fmean(xs[:c])) ** 2 for x in xs[:c])
              + sum((x - statistics.fmean(xs[c:])) ** 2 for x in xs[c:]))
    low, high = statistics.fmean(xs[:cut]), statistics.fmean(xs[cut:])
    return min(cut, n - cut) >= 0.2 * n and (high - low) / low > 0.05


def outliers(times: list[float]) -> list[int]:
    """Indices of the times outside the Tukey fences (1.5 interquartile ranges)."""
    if len(times) < 4:
        return []
    xs = sorted(times)
    q1, q3 = _percentile(xs, 0.25), _percentile(xs, 0.75)
    lo, hi = q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1)
    return [i for i, t in enumerate(times) if t < lo or t > hi]


def paired_ratio(a: list[float], b: list[float], seed: int = 0) -> dict[str, Any]:
    """The ratio of side ``a`` to side ``b`` from interleaved pairs of block times: the median of
    the pairs' ratios, its bootstrap 95% interval, spread, outliers and a stability verdict."""
    if len(a) != len(b) or not a:
        raise ValueError(f"paired_ratio needs pairs of times, got {len(a)} and {len(b)}")
    ratios = [x / y for x, y in zip(a, b, strict=True)]
    median = statistics.median(ratios)
    low, high = bootstrap_interval(ratios, seed=seed) if len(ratios) > 1 else (median, median)
    half = max(median - low, high - median) / median
    xs = sorted(ratios)
    reasons = []
    if len(ratios) < 5:
        reasons.append(f"only {len(ratios)} rounds")
    if half > UNSTABLE_HALF_WIDTH:
        reasons.append(f"interval +-{100 * half:.1f}% is wider than +-{100 * UNSTABLE_HALF_WIDTH:.0f}%")
    for side, times in (("ganforge", a), ("eager", b)):
        if bimodal(times):
            reasons.append(f"the {side} blocks are bimodal")
    return {
        "ratio": median, "low": low, "high": high, "half_width": half, "rounds": len(ratios),
        "ratios": ratios, "iqr": (_percentile(xs, 0.75) - _percentile(xs, 0.25)) if len(xs) > 1 else 0.0,
        "min": xs[0], "max": xs[-1],
        "outliers": {"ganforge": outliers(a), "eager": outliers(b)},
        "unstable": reasons,
    }


class OtherLoad:
    """How many cores other processes kept busy between ``start()`` and ``stop()``: the
    machine's busy CPU time (/proc/stat) less this process's own (``os.times``), per second of
    wall time. None where /proc/stat cannot be read."""

    def start(self) -> None:
        self.jiffies, self.times = cpu_times(), os.times()

    def stop(self) -> float | None:
        now, times = cpu_times(), os.times()
        if now is None or self.jiffies is None:
            return None
        hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        wall = times.elapsed - self.times.elapsed
        if wall <= 0:
            return None
        busy = (now[0] - self.jiffies[0]) / hz
        own = sum(getattr(times, k) - getattr(self.times, k) for k in ("user", "system", "children_user",
                                                                       "children_system"))
        return max(0.0, (busy - own) / wall)


def machine_facts() -> dict[str, Any]:
    """What a timing depends on besides the code: load averages, the CPU governor (where
    readable), the CPU's vector capability and whether it computes bf16 natively."""
    governor = None
    try:
        governor = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").read_text().strip()
    except OSError:
        pass
    model = None
    try:
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), None)
    except OSError:
        pass
    return {"loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None, "governor": governor,
            "cpu_model": model, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "native_bf16": native_cpu_bf16()}
