"""Throughput benchmark: ganforge's engine against plain PyTorch loops on the same models.

    ganforge bench RECIPE [--steps N] [--warmup W] [overrides ...]
    python benchmarks/throughput.py RECIPE ...        (the same)

Cases, all in one process and one run (these machines are shared: compare ratios, not
absolute figures across runs):

- ``ganforge``: the real engine (``ganforge.training.engine.train``), timed between two generator steps
  by a lifecycle-hook plugin; samples, metrics and checkpoints are off while timing.
- ``eager``: a bare PyTorch loop written out by hand that does exactly the engine's work: the
  same models (built by the same code, in the same memory format), loss, penalties (in fp32),
  n_critic, autocast precision, EMA and the same Adam implementation (fused where the engine
  uses fused); data already on the device as one tensor, batch indices drawn with
  ``torch.randint``. Its ratio to ``ganforge`` is the engine's overhead; the table says what
  it ran.
- ``ganforge_eager`` (when ganforge ran CUDA graphs): the engine with ``train.cuda_graph=false``.
- ``eager_fp32`` (recipes in bf16/fp16): the same eager loop in fp32, the usual baseline.
- ``reference`` (MNIST-family recipes only): the loop as users write it: torchvision's MNIST
  dataset + DataLoader (0 workers, ToTensor + Normalize), fp32 eager, sigmoid + ``nn.BCELoss``.

Reported per case: images/s (real images through D per second), ms per generator step,
achieved TFLOP/s (FLOPs of one step counted with ``torch.utils.flop_counter``), % of the
device's peak where it is known (``--peak-tflops`` otherwise), and peak memory; which step
ganforge ran (a CUDA graph or the eager step); for datasets read from files, the images/s of
the engine's data loader alone, to show whether the loader or the step is the limit.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch

from ganforge.bench import stats as bench_stats
from ganforge.bench.loops import eager_loop, reference_loop
from ganforge.bench.threads import threads_check, threads_table
from ganforge.bench.timing import (cache_of, count_flops, loader_images_per_s, peak_memory, time_ganforge,
                                   time_interleaved, time_loop)
from ganforge.contract.recipes import load_recipe
from ganforge.observe.files import write_text

__all__ = ["add_arguments", "main", "overhead_lines", "run", "run_from_args", "table", "threads_check",
           "threads_table"]  # (threads_*: from ganforge.bench.threads)

#: Dense peak TFLOP/s by (device name fragment, precision), from the vendors' data sheets.
PEAKS = {("H100", "bf16"): 989.0, ("H100", "fp16"): 989.0, ("H100", "no"): 67.0,
         ("H200", "bf16"): 989.0, ("H200", "fp16"): 989.0, ("H200", "no"): 67.0}


def run(recipe_name: str, overrides: list[str], warmup: int, steps: int,
        peak_tflops: float | None = None, reference: bool | None = None,
        rounds: int = 200, eager_cache: bool | None = None) -> dict[str, Any]:
    """``steps`` timed generator steps per side in ``rounds`` interleaved blocks (the ratio and
    its interval: :mod:`ganforge.bench.stats`); ``eager_cache``: the bare loop's autocast weight
    cache (default: as the engine's)."""
    recipe = load_recipe(recipe_name, overrides)
    images_per_step = recipe.data.batch_size * recipe.train.n_critic
    rounds = max(1, min(rounds, steps))  # (fewer steps than rounds: blocks of one step)
    block = steps // rounds
    facts = bench_stats.machine_facts()
    results: dict[str, dict[str, Any]] = {}
    info: dict[str, Any] = {}

    def make_loop(state: Any):
        engine_cache = cache_of(state)
        cache = eager_cache if eager_cache is not None else engine_cache is not False
        return eager_loop(recipe, state.accelerator.device, info, cache=cache)

    timed = time_interleaved(load_recipe(recipe_name, overrides), make_loop, warmup, block, rounds)
    device = timed["device"]
    for case, key in (("ganforge", "engine"), ("eager", "loop")):
        results[case] = {"seconds": statistics.median(timed[key]), "all_seconds": timed[key],
                         "memory_mib": timed["memory"][case], "steps": block}
    comparison = bench_stats.paired_ratio(timed["engine"], timed["loop"])
    precision = timed["precision"]  # what train.precision (perhaps auto) became on this device
    single = min(steps, 200)  # the other cases: one run each, for scale
    if timed["captured"]:  # and what the graph gains over ganforge's own eager step
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        eager_engine = time_ganforge(load_recipe(recipe_name, overrides + ["train.cuda_graph=false"]), warmup, single)
        results["ganforge_eager"] = {"seconds": eager_engine["seconds"], "memory_mib": peak_memory(device),
                                     "steps": single}
    if precision != "no":  # the usual baseline: the same eager loop in fp32
        fp32 = load_recipe(recipe_name, overrides + ["train.precision=no"])
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        seconds = time_loop(eager_loop(fp32, device), device, warmup, single)
        results["eager_fp32"] = {"seconds": seconds, "memory_mib": peak_memory(device), "steps": single}

    if reference is None:
        reference = recipe.data.name in ("mnist", "fashion_mnist") and recipe.data.root is not None \
            and not recipe.data.args.get("pad")  # (the users' loop reads torchvision's 28x28 digits)
    if reference:
        with tempfile.TemporaryDirectory() as tmp:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            ref = load_recipe(recipe_name, overrides + ["train.precision=no", "train.n_critic=1", "penalties=[]"])
            seconds = time_loop(reference_loop(ref, device, Path(tmp)), device, warmup, single)
            results["reference"] = {"seconds": seconds, "memory_mib": peak_memory(device), "steps": single}

    loader = loader_images_per_s(recipe, device, min(steps, 200))
    flops = count_flops(recipe, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    if peak_tflops is None:
        peak_tflops = next((v for (frag, prec), v in PEAKS.items()
                            if frag in name and prec == precision), None)
    for case, r in results.items():
        per_step = images_per_step if case != "reference" else recipe.data.batch_size
        r["images_per_s"] = per_step * r["steps"] / r["seconds"]
        r["step_ms"] = 1000 * r["seconds"] / r["steps"]
        case_flops = flops if case not in ("reference", "eager_fp32") else None  # different work
        r["tflops"] = case_flops * r["steps"] / r["seconds"] / 1e12 if case_flops else None
        r["pct_peak"] = 100 * r["tflops"] / peak_tflops if (r["tflops"] and peak_tflops) else None
    facts["loadavg_after"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    facts["other_load_cores"] = timed["other_load"]
    return {
        "recipe": recipe_name, "overrides": overrides, "steps": block * rounds, "warmup": warmup,
        "rounds": rounds, "block": block, "overhead": comparison,
        "batch_size": recipe.data.batch_size, "n_critic": recipe.train.n_critic,
        "precision": precision, "autocast_cache": {"ganforge": timed["autocast_cache"],
                                                   "eager": info.get("cache")},
        "flops_per_step": flops, "device": name, "machine": facts,
        "ganforge_path": timed["path"], "eager_work": info.get("work"), "loader_images_per_s": loader, "num_workers": recipe.data.num_workers,
        "cpu_threads": torch.get_num_threads(), "cores": os.cpu_count(), "torch": torch.__version__,
        "date": datetime.datetime.now().isoformat(timespec="seconds"), "peak_tflops": peak_tflops,
        "results": results,
    }


def overhead_lines(report: dict[str, Any]) -> list[str]:
    """The engine's overhead against the bare loop with its interval, and a warning line when
    the figure cannot be trusted (:func:`ganforge.bench.stats.paired_ratio`)."""
    o = report["overhead"]
    pct = lambda r: f"{100 * (r - 1):+.1f}%"  # noqa: E731
    lines = [f"ganforge per-step overhead vs the bare eager loop: {pct(o['ratio'])} "
             f"(95% interval {pct(o['low'])} to {pct(o['high'])}; median of {o['rounds']} interleaved pairs; "
             f"pair ratios IQR {o['iqr']:.3f}, range {o['min']:.3f}-{o['max']:.3f}; outlier blocks "
             f"{len(o['outliers']['ganforge'])} ganforge, {len(o['outliers']['eager'])} eager)"]
    if o["unstable"]:
        lines.append(f"UNSTABLE: {'; '.join(o['unstable'])}: not a figure to quote. Rerun with more rounds "
                     f"(--rounds {2 * o['rounds']}), on an idle machine, or with train.threads=1")
    return lines


def table(report: dict[str, Any]) -> str:
    r, m = report["results"], report["machine"]
    load = m.get("other_load_cores")
    lines = [f"{report['recipe']} {' '.join(report['overrides'])}".rstrip(),
             f"device: {report['device']} ({report['cores']} cores, {report['cpu_threads']} threads, "
             f"{m['cpu_capability']}, bf16 {'native' if m['native_bf16'] else 'emulated'}, governor "
             f"{m['governor'] or 'unreadable'}); torch {report['torch']}; {report['date']}",
             f"load average before {m['loadavg'][0]:.2f}, after {m['loadavg_after'][0]:.2f}; other processes "
             f"kept {'?' if load is None else f'{load:.2f}'} cores busy during the rounds" if m.get("loadavg")
             else "load: unreadable",
             f"batch {report['batch_size']}, n_critic {report['n_critic']}, precision {report['precision']}, "
             f"autocast weight cache ganforge {report['autocast_cache']['ganforge']}, eager "
             f"{report['autocast_cache']['eager']}; {report['rounds']} rounds of {report['block']} steps, "
             f"ganforge and eager interleaved after {report['warmup']} warm-up; ganforge ran the "
             f"{report.get('ganforge_path', '?')}",
             f"{'case':<15} {'images/s':>10} {'ms/step':>8} {'TFLOP/s':>8} {'% peak':>7} {'mem MiB':>8} "
             f"{'vs eager':>9} {'vs reference':>13}"]
    for case, v in r.items():
        fmt = lambda x, f: format(x, f) if x is not None else "n/a"  # noqa: E731
        vs_e = v["images_per_s"] / r["eager"]["images_per_s"]
        vs_r = v["images_per_s"] / r["reference"]["images_per_s"] if "reference" in r else None
        lines.append(f"{case:<15} {v['images_per_s']:>10.0f} {v['step_ms']:>8.2f} {fmt(v['tflops'], '.3f'):>8} "
                     f"{fmt(v['pct_peak'], '.1f'):>7} {v['memory_mib']:>8.0f} {vs_e:>8.3f}x "
                     f"{fmt(vs_r, '.2f'):>12}{'x' if vs_r else ''}")
    lines.append("(ganforge, eager: the median block; other cases: one run of "
                 f"{min(r[c]['steps'] for c in r)} steps, for scale)")
    if report.get("eager_work"):
        lines.append(f"eager = a bare hand-written loop doing the engine's work: {report['eager_work']}")
    lines += overhead_lines(report)
    if report.get("loader_images_per_s"):
        lines.append(f"data loader alone ({report['num_workers']} workers): "
                     f"{report['loader_images_per_s']:.0f} images/s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ganforge bench", description="Throughput of a recipe "
                                     "against plain PyTorch loops on the same models.")
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--steps", type=int, default=2000,
                        help="timed generator steps per side (ganforge, eager), in --rounds blocks")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=200,
                        help="interleaved blocks per side; the ratio is the median of the pairs, with a "
                             "bootstrap 95%% interval")
    parser.add_argument("--eager-cache", choices=("on", "off"), default=None,
                        help="the bare loop's autocast weight cache (default: as ganforge's, "
                             "train.autocast_cache)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's peak for the recipe's precision (known for H100/H200)")
    parser.add_argument("--results", default="benchmarks/results", help="folder for the JSON record")
    parser.add_argument("--threads", action="store_true",
                        help="compare train.threads auto, 1 and one per core, alone and next to a busy process")


def run_from_args(args: argparse.Namespace) -> int:
    if args.threads:
        report = threads_check(args.recipe, args.overrides, args.warmup, args.steps)
        print(threads_table(report))
        report["device"] = "cpu_threads"
    else:
        cache = None if args.eager_cache is None else args.eager_cache == "on"
        report = run(args.recipe, args.overrides, args.warmup, args.steps, args.peak_tflops, rounds=args.rounds,
                     eager_cache=cache)
        print(table(report))
    folder = Path(args.results)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = report["date"].replace(":", "")
    path = folder / f"{report['recipe']}-{report['device'].replace(' ', '_')}-{stamp}.json"
    write_text(path, json.dumps(report, indent=1, default=str))
    print(f"wrote {path}")
    return 0
