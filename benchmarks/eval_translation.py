"""Evaluate an image-to-image run on a larger held-out split than the recipe's.

    python benchmarks/eval_translation.py RUN [--eval-limit 5000] [--set gan_weight=0 ...]

Builds the run's dataset again with ``eval_limit`` (mnist_edges: that many test digits;
mnist_thick: that many per domain, from disjoint halves of the test set), translates the whole
held-out split with the run's networks (EMA copies where kept) and prints the recipe's metrics
as JSON. Used for the figures in benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json

import torch

from ganforge.run.loading import load_for_sampling as _load_for_sampling
from ganforge.contract.manager import get_plugin_manager
from ganforge.observe.sampling import evaluate_samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("run")
    parser.add_argument("--eval-limit", type=int, default=5000)
    args = parser.parse_args()
    nets, system, recipe, meta = _load_for_sampling(args.run, ema=True)
    registry = get_plugin_manager().registry
    data_args = {**recipe.data.args, "eval_limit": args.eval_limit}
    dataset = registry.build("dataset", recipe.data.name, data_args, root=recipe.data.root, download=False)
    system.dataset, system._held_out = dataset, None
    metrics = {m.name: registry.build("metric", m.name, m.args, dataset=dataset) for m in recipe.metrics}
    inputs = system.noise(10 ** 9)  # the whole held-out split
    with torch.no_grad():
        samples = system.generate(nets, inputs).float()
    results = evaluate_samples(samples, dataset, metrics, None, inputs)
    print(json.dumps({"run": args.run, "step": meta["step"], "held_out": len(inputs), **results}, indent=1))


if __name__ == "__main__":
    main()
