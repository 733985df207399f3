"""StyleGAN2's modulated convolution, fused (one grouped convolution with per-sample weights) and
not (input scaling + a shared convolution + output scaling), timed as one forward and backward of
G and D at batch 32, interleaved A/B in the same process so that a slow spell of the machine hits
both; prints the median ratio per precision and the machine. Usage (from the repository root):

    OMP_NUM_THREADS=1 python benchmarks/stylegan2_modconv.py [--rounds 15] [--width 64] [--res 32]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from ganforge.plugins.image.stylegan2 import stylegan2_discriminator, stylegan2_generator


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--width", type=int, default=64, help="channel_max (64: the CPU recipe's)")
    ap.add_argument("--res", type=int, default=32)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    fmaps = args.width * args.res / 32768  # (min(fmaps * 32768 / res, channel_max) = width at every resolution)
    results = {}
    for precision in ("fp32", "bf16"):
        runs = {}
        for fused in (False, True):
            torch.manual_seed(0)
            G = stylegan2_generator(z_dim=128, out_shape=(1, args.res, args.res), w_dim=128, map=2, fmaps=fmaps,
                                    channel_max=args.width, fused=fused)
            D = stylegan2_discriminator(in_shape=(1, args.res, args.res), fmaps=fmaps, channel_max=args.width)
            runs[fused] = (G, D)
        z = torch.randn(args.batch, 128)
        ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16" else \
            (lambda: torch.autocast("cpu", enabled=False))

        def step(G, D):
            with ctx():
                loss = D(G(z)).float().mean()
            loss.backward()

        times = {False: [], True: []}
        for fused in (False, True):
            step(*runs[fused])  # warm-up
        for _ in range(args.rounds):
            for fused in (False, True):
                t = time.perf_counter()
                step(*runs[fused])
                times[fused].append(time.perf_counter() - t)
        ratio = statistics.median(f / n for f, n in zip(times[True], times[False], strict=True))
        results[precision] = {"non_fused_s": statistics.median(times[False]), "fused_s": statistics.median(times[True]),
                              "fused_over_non_fused": ratio}
        print(f"{precision}: non-fused {results[precision]['non_fused_s']:.3f} s, fused "
              f"{results[precision]['fused_s']:.3f} s per G+D forward/backward (batch {args.batch}, "
              f"{args.res}x{args.res}, width {args.width}); fused/non-fused median ratio {ratio:.3f}")
    print(json.dumps({"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                      "torch": torch.__version__, **results}))


if __name__ == "__main__":
    main()
