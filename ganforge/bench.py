"""Throughput benchmark: ganforge's engine against plain PyTorch loops on the same models.

    ganforge bench RECIPE [--steps N] [--warmup W] [overrides ...]
    python benchmarks/throughput.py RECIPE ...        (the same)

Cases, all in one process and one run (these machines are shared: compare ratios, not
absolute figures across runs):

- ``ganforge``: the real engine (``ganforge.engine.train``), timed between two generator steps
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
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from ganforge.files import write_text
from ganforge.config import Recipe, load_recipe
from ganforge.bench_loops import eager_loop, reference_loop
from ganforge.hookspecs import hookimpl

#: Dense peak TFLOP/s by (device name fragment, precision), from the vendors' data sheets.
PEAKS = {("H100", "bf16"): 989.0, ("H100", "fp16"): 989.0, ("H100", "no"): 67.0,
         ("H200", "bf16"): 989.0, ("H200", "fp16"): 989.0, ("H200", "no"): 67.0}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory(device: torch.device) -> float:
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
            _sync(state.accelerator.device)
            now = time.perf_counter()
            if state.step == self.warmup:
                self.start = now
            else:
                self.end = now


def time_ganforge(recipe: Recipe, warmup: int, steps: int) -> dict[str, Any]:
    from ganforge.engine import train
    from ganforge.manager import PluginManager

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
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return time.perf_counter() - start


def loader_images_per_s(recipe: Recipe, device: torch.device, batches: int) -> float | None:
    """Images/s of the engine's DataLoader alone (its workers, pinned memory, copy to the
    device), for datasets read from files; None for datasets held in memory (no loader)."""
    from ganforge.data import make_loader
    from ganforge.manager import PluginManager

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
            _sync(device)
            start = time.perf_counter()
        elif i > 1:
            seen += len(batch)
    _sync(device)
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


def run(recipe_name: str, overrides: list[str], warmup: int, steps: int,
        peak_tflops: float | None = None, reference: bool | None = None,
        repeats: int = 3) -> dict[str, Any]:
    recipe = load_recipe(recipe_name, overrides)
    images_per_step = recipe.data.batch_size * recipe.train.n_critic
    results: dict[str, dict[str, Any]] = {}

    # The cases alternate, `repeats` times, and each reports its median: on a shared, noisy
    # machine a slow spell then hits every case instead of whichever ran during it.
    ganforge_s, eager_s, mem_g, mem_e = [], [], 0.0, 0.0
    eager_step, device, info = None, None, {}
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        timed = time_ganforge(load_recipe(recipe_name, overrides), warmup, steps)
        device = timed["device"]
        ganforge_s.append(timed["seconds"])
        mem_g = max(mem_g, _peak_memory(device))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        eager_step = eager_step or eager_loop(recipe, device, info)
        eager_s.append(time_loop(eager_step, device, warmup, steps))
        mem_e = max(mem_e, _peak_memory(device))
    results["ganforge"] = {"seconds": statistics.median(ganforge_s), "all_seconds": ganforge_s, "memory_mib": mem_g}
    results["eager"] = {"seconds": statistics.median(eager_s), "all_seconds": eager_s, "memory_mib": mem_e}
    precision = timed["precision"]  # what train.precision (perhaps auto) became on this device
    if timed["captured"]:  # and what the graph gains over ganforge's own eager step
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        eager_engine = time_ganforge(load_recipe(recipe_name, overrides + ["train.cuda_graph=false"]), warmup, steps)
        results["ganforge_eager"] = {"seconds": eager_engine["seconds"], "memory_mib": _peak_memory(device)}
    if precision != "no":  # the usual baseline: the same eager loop in fp32
        fp32 = load_recipe(recipe_name, overrides + ["train.precision=no"])
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        seconds = time_loop(eager_loop(fp32, device), device, warmup, steps)
        results["eager_fp32"] = {"seconds": seconds, "memory_mib": _peak_memory(device)}

    if reference is None:
        reference = recipe.data.name in ("mnist", "fashion_mnist") and recipe.data.root is not None
    if reference:
        with tempfile.TemporaryDirectory() as tmp:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            ref = load_recipe(recipe_name, overrides + ["train.precision=no", "train.n_critic=1", "penalties=[]"])
            seconds = time_loop(reference_loop(ref, device, Path(tmp)), device, warmup, steps)
            results["reference"] = {"seconds": seconds, "memory_mib": _peak_memory(device)}

    loader = loader_images_per_s(recipe, device, min(steps, 200))
    flops = count_flops(recipe, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    if peak_tflops is None:
        peak_tflops = next((v for (frag, prec), v in PEAKS.items()
                            if frag in name and prec == precision), None)
    for case, r in results.items():
        per_step = images_per_step if case != "reference" else recipe.data.batch_size
        r["images_per_s"] = per_step * steps / r["seconds"]
        r["step_ms"] = 1000 * r["seconds"] / steps
        case_flops = flops if case not in ("reference", "eager_fp32") else None  # different work
        r["tflops"] = case_flops * steps / r["seconds"] / 1e12 if case_flops else None
        r["pct_peak"] = 100 * r["tflops"] / peak_tflops if (r["tflops"] and peak_tflops) else None
    return {
        "recipe": recipe_name, "overrides": overrides, "steps": steps, "warmup": warmup, "repeats": repeats,
        "batch_size": recipe.data.batch_size, "n_critic": recipe.train.n_critic,
        "precision": precision, "flops_per_step": flops, "device": name,
        "ganforge_path": timed["path"], "eager_work": info.get("work"), "loader_images_per_s": loader, "num_workers": recipe.data.num_workers,
        "cpu_threads": torch.get_num_threads(), "cores": os.cpu_count(), "torch": torch.__version__,
        "date": datetime.datetime.now().isoformat(timespec="seconds"), "peak_tflops": peak_tflops,
        "results": results,
    }


def table(report: dict[str, Any]) -> str:
    r = report["results"]
    lines = [f"{report['recipe']} {' '.join(report['overrides'])}".rstrip(),
             f"device: {report['device']} ({report['cores']} cores, {report['cpu_threads']} threads); "
             f"torch {report['torch']}; {report['date']}",
             f"batch {report['batch_size']}, n_critic {report['n_critic']}, precision {report['precision']}, "
             f"{report['steps']} timed steps after {report['warmup']} warm-up, median of {report['repeats']} "
             f"alternating rounds; ganforge ran the {report.get('ganforge_path', '?')}",
             f"{'case':<15} {'images/s':>10} {'ms/step':>8} {'TFLOP/s':>8} {'% peak':>7} {'mem MiB':>8} "
             f"{'vs eager':>9} {'vs reference':>13}"]
    for case, v in r.items():
        fmt = lambda x, f: format(x, f) if x is not None else "n/a"  # noqa: E731
        vs_e = v["images_per_s"] / r["eager"]["images_per_s"]
        vs_r = v["images_per_s"] / r["reference"]["images_per_s"] if "reference" in r else None
        lines.append(f"{case:<15} {v['images_per_s']:>10.0f} {v['step_ms']:>8.2f} {fmt(v['tflops'], '.3f'):>8} "
                     f"{fmt(v['pct_peak'], '.1f'):>7} {v['memory_mib']:>8.0f} {vs_e:>8.3f}x "
                     f"{fmt(vs_r, '.2f'):>12}{'x' if vs_r else ''}")
    if report.get("eager_work"):
        lines.append(f"eager = a bare hand-written loop doing the engine's work: {report['eager_work']}")
    overhead = r["eager"]["images_per_s"] / r["ganforge"]["images_per_s"] - 1
    lines.append(f"ganforge per-step overhead vs the bare eager loop: {100 * overhead:+.1f}%")
    if report.get("loader_images_per_s"):
        lines.append(f"data loader alone ({report['num_workers']} workers): "
                     f"{report['loader_images_per_s']:.0f} images/s")
    return "\n".join(lines)


def threads_check(recipe_name: str, overrides: list[str], warmup: int, steps: int) -> dict[str, Any]:
    """``train.threads``: auto, 1 and one per core, timed alone and next to one busy process
    (a Python loop started here), so that auto can be compared with the best setting in both."""
    import subprocess
    import sys

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    saved = os.environ.pop("OMP_NUM_THREADS", None)  # auto decides only when it is not set
    threads_before = torch.get_num_threads()
    rows = []
    try:
        for load in ("alone", "next to 1 busy process"):
            busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if load != "alone" else None
            try:
                if busy is not None:
                    time.sleep(1.0)
                row = {"load": load}
                for setting in ("auto", "1", str(cores)):
                    recipe = load_recipe(recipe_name, overrides + [f"train.threads={setting}", "train.cpu=true"])
                    row[setting] = time_ganforge(recipe, warmup, steps)["seconds"]
                    if setting == "auto":
                        row["auto_threads"] = torch.get_num_threads()
                rows.append(row)
            finally:
                if busy is not None:
                    busy.kill()
                    busy.wait()
    finally:
        if saved is not None:
            os.environ["OMP_NUM_THREADS"] = saved
        torch.set_num_threads(threads_before)
    return {"recipe": recipe_name, "overrides": overrides, "cores": cores, "steps": steps, "rows": rows,
            "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "torch": torch.__version__}


def threads_table(report: dict[str, Any]) -> str:
    c = str(report["cores"])
    lines = [f"train.threads on {report['recipe']} {' '.join(report['overrides'])}".rstrip(),
             f"{report['cores']} cores; {report['steps']} timed steps; torch {report['torch']}; {report['date']}",
             f"{'load':<24} {'auto s':>8} {'(threads)':>9} {'1 thread s':>11} {c + ' threads s':>12} "
             f"{'auto / best':>12}"]
    for r in report["rows"]:
        best = min(r["auto"], r["1"], r[c])
        lines.append(f"{r['load']:<24} {r['auto']:>8.2f} {r['auto_threads']:>9} {r['1']:>11.2f} {r[c]:>12.2f} "
                     f"{r['auto'] / best:>11.2f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ganforge bench", description="Throughput of a recipe "
                                     "against plain PyTorch loops on the same models.")
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--steps", type=int, default=200, help="timed generator steps per case")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3,
                        help="rounds alternating ganforge and the eager loop; medians are reported")
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
        report = run(args.recipe, args.overrides, args.warmup, args.steps, args.peak_tflops, repeats=args.repeats)
        print(table(report))
    folder = Path(args.results)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = report["date"].replace(":", "")
    path = folder / f"{report['recipe']}-{report['device'].replace(' ', '_')}-{stamp}.json"
    write_text(path, json.dumps(report, indent=1, default=str))
    print(f"wrote {path}")
    return 0
