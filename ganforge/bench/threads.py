"""``ganforge bench RECIPE --threads``: ``train.threads`` auto, 1 and one per core, timed alone and
next to one busy process."""
from __future__ import annotations

import os
import time
from typing import Any

import torch

from ganforge.bench.timing import time_ganforge
from ganforge.contract.recipes import load_recipe

__all__ = ["threads_check", "threads_table"]


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
