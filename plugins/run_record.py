"""Writes ``<run>/run.json`` when training starts: the recipe, the machine and the software,
so that ``ganforge report RUN`` can describe a run that has not written a checkpoint yet.

A lifecycle plugin (main process only, as every lifecycle hook): one small JSON file, rewritten
when a run resumes (its ``started`` and ``resumed_at_step`` then say so).
"""
from __future__ import annotations

import json
import os
import platform
import time

import torch

from ganforge import hookimpl
from ganforge.observe.files import write_text

__all__ = ["machine"]


def machine(device: torch.device) -> str:
    """The accelerator's name, or the CPU model, in words."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    return f"{names[0] if names else platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


@hookimpl
def ganforge_train_start(state):
    import ganforge

    acc = state.accelerator
    record = {
        "run": state.config.name, "started": time.strftime("%Y-%m-%d %H:%M:%S"), "resumed_at_step": state.step,
        "machine": machine(acc.device), "device": str(acc.device), "processes": acc.num_processes,
        "precision": acc.mixed_precision, "threads": torch.get_num_threads(),
        "cuda_graph": bool(getattr(state.stepper, "capture", False)),
        "versions": {"ganforge": getattr(ganforge, "__version__", "?"), "torch": torch.__version__,
                     "python": platform.python_version()},
        "recipe": state.config.to_dict(),
    }
    write_text(state.output_dir / "run.json", json.dumps(record, indent=1))
