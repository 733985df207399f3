"""Step throughput of a recipe with 1 and 2 CPU processes (gloo), in one run.

    python benchmarks/ddp_cpu.py [RECIPE] [--steps N] [--batch B]

Each configuration trains RECIPE for N generator steps with data.batch_size=B per process
(so 2 processes see 2B samples per step) and reads images/s from the run's metrics.jsonl,
skipping the first logged window (start-up). Prints a table and writes JSON to
benchmarks/results/. On a 2-core machine two processes share the cores: the ratio says what
DDP costs there, not what it gains on real hardware.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch


def run(recipe: str, procs: int, steps: int, batch: int, workdir: Path) -> dict:
    out = workdir / f"p{procs}"
    args = [recipe, f"out_dir={out}", f"train.steps={steps}", f"data.batch_size={batch}",
            "log.progress=false", "log.every=50", "log.sample_every=0", "metrics=[]"]
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS=str(max(1, os.cpu_count() // procs)))
    if procs == 1:
        cmd = [sys.executable, "-m", "ganforge", "train", *args]
    else:
        env["ACCELERATE_USE_CPU"] = "1"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={procs}", "-m", "ganforge", "train", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{procs} process(es) failed:\n{proc.stderr[-3000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rates = [r["images_per_s"] for r in rows if "images_per_s" in r][1:]
    images_per_s = sum(rates) / len(rates)
    return {"processes": procs, "batch_per_process": batch, "images_per_s": images_per_s,
            "step_ms": 1000 * batch * procs / images_per_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", nargs="?", default="toy_grid")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=256)
    a = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = [run(a.recipe, p, a.steps, a.batch, Path(tmp)) for p in (1, 2)]
    base = results[0]["images_per_s"]
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    print(f"{a.recipe}: {a.steps} steps, batch {a.batch} per process; {machine}; torch {torch.__version__}")
    print(f"{'processes':>9} {'images/s':>10} {'step ms':>8} {'vs 1 process':>13}")
    for r in results:
        print(f"{r['processes']:>9} {r['images_per_s']:>10.0f} {r['step_ms']:>8.1f} {r['images_per_s'] / base:>12.2f}x")
    record = {"benchmark": "ddp_cpu", "recipe": a.recipe, "steps": a.steps, "machine": machine,
              "torch": torch.__version__, "date": datetime.date.today().isoformat(), "results": results}
    out = Path(__file__).parent / "results" / f"ddp_cpu-{record['date']}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(record, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
