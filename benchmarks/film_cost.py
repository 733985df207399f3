"""What the training film costs: toy_grid with ``log.film_every`` against the same run without.

Two measures in one process, on this machine: (1) the wall time of whole runs, with and without
the film, alternated ``--repeats`` times (noisy on a shared machine); (2) the time spent inside
the film's recording itself (every ``Film.record`` call, timed), as a share of the run with the
film. Prints a table and writes benchmarks/results/film_cost.json.

    python benchmarks/film_cost.py --steps 16000 --film-every 500 --repeats 2
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ganforge.config import load_recipe
from ganforge.training.engine import train
from ganforge.plugins import film


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", default="toy_grid")
    parser.add_argument("--steps", type=int, default=16000)
    parser.add_argument("--film-every", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    spent: list[float] = []
    record = film.Film.record

    def timed(self, state):
        start = time.perf_counter()
        try:
            return record(self, state)
        finally:
            spent.append(time.perf_counter() - start)

    film.Film.record = timed
    walls: dict[str, list[float]] = {"film": [], "none": []}
    shares = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for arm in ("none", "film") if r % 2 == 0 else ("film", "none"):
                spent.clear()
                every = args.film_every if arm == "film" else 0
                recipe = load_recipe(args.recipe, [f"out_dir={tmp}/{arm}{r}", f"train.steps={args.steps}",
                                                   f"log.film_every={every}", "log.animate=false",
                                                   "log.progress=false", "log.eval_every=0", "metrics=[]"])
                start = time.perf_counter()
                train(recipe)
                walls[arm].append(time.perf_counter() - start)
                if arm == "film":
                    shares.append((sum(spent), len(spent), walls[arm][-1]))
    film_wall, none_wall = statistics.median(walls["film"]), statistics.median(walls["none"])
    recorded = statistics.median(s for s, _, _ in shares)
    frames = shares[0][1]
    rows = [("runs without a film (median s)", f"{none_wall:.1f}"), ("runs with a film (median s)", f"{film_wall:.1f}"),
            ("wall-time ratio film / none", f"{film_wall / none_wall:.3f}"), ("frames per run", str(frames)),
            ("time inside recording (s, median)", f"{recorded:.2f}"),
            ("recording share of the run", f"{100 * recorded / film_wall:.2f}%"),
            ("ms per frame", f"{1000 * recorded / frames:.1f}")]
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"
    print(f"{args.recipe}, {args.steps} steps, film every {args.film_every}, {args.repeats} repeats; {machine}")
    for name, value in rows:
        print(f"  {name:<36} {value}")
    out = Path(__file__).parent / "results" / "film_cost.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "machine": machine, "walls": walls,
                               "recording": shares, "rows": dict(rows)}, indent=1))


if __name__ == "__main__":
    main()
