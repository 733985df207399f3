"""Throughput of a recipe against plain PyTorch loops (same as `ganforge bench`).

    python benchmarks/throughput.py toy_grid --steps 300
    python benchmarks/throughput.py mnist_seed data.root=../shared/data/mnist --steps 300
"""
import sys

from ganforge.bench.compare import main

if __name__ == "__main__":
    sys.exit(main())
