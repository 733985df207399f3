"""Data-limited MNIST: the same recipe with no augmentation, DiffAugment and ADA (issue #25).

    python benchmarks/data_limited.py --limit 1000 --steps 6000          # the three runs, two at a time
    python benchmarks/data_limited.py --limit 300 --steps 6000 --recipe mnist_fc_r1
    python benchmarks/data_limited.py --limit 300 --recipe mnist_dcgan_r1 --only none ada --tag stylegan2_d \
        --set data.args.pad=2 "discriminator={name: stylegan2, args: {fmaps: 0.0625, channel_max: 64}}" ...

Each run trains ``--recipe`` (default ``mnist_dcgan_r1``: narrow DCGAN, unnormalised D, lazy R1,
EMA; ``mnist_fc_r1``: InfoGAN's networks with a 512-wide FC layer in D) on the first
``--limit`` training digits for the same number of steps, one thread each, and is scored by the
``mnist`` metric on 10,000 EMA samples against the 10,000 test digits: classifier score, Fréchet
distance (classifier features), class KL, precision/recall. D's overfitting signal
r_t = E[sign D(real)] (on the images D judges, augmented or not, as ADA measures it) is logged
every 4 steps in every run: ADA's own ``ada_rt``, and for the other two a probe augmentation
that measures it and passes the images on unchanged (no augmentation) or through DiffAugment.
It prints a table and writes benchmarks/results/data_limited-<limit>-<date>.json.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = {"none": "augment={name: rt_probe}",
        "diffaugment": "augment={name: rt_probe, args: {inner: diffaugment}}",
        "ada": "augment={name: ada, args: {kimg: 100}}"}


class RtProbe:
    """Measures E[sign D(real)] as ADA does (every 4 steps); passes images on unchanged or
    through DiffAugment (``inner``)."""

    capturable = True
    adaptive = True

    def __init__(self, inner: str = "none"):
        import torch

        from ganforge.plugins.augment import DiffAugment

        self.inner = DiffAugment() if inner == "diffaugment" else None
        self.stats, self.rt = torch.zeros(2), torch.zeros(())

    def __call__(self, x, groups=1):
        return self.inner(x, groups) if self.inner is not None else x

    def observe(self, real_logits):
        self.stats = self.stats.to(real_logits.device)
        self.rt = self.rt.to(real_logits.device)
        per_image = real_logits.reshape(real_logits.shape[0], -1).mean(1)
        self.stats[0] += per_image.sign().sum()
        self.stats[1] += per_image.shape[0]

    def update(self, step, reduce):
        if step % 4 == 0:
            total = reduce(self.stats.clone())
            self.rt.copy_(total[0] / total[1].clamp_min(1))
            self.stats.zero_()

    def logs(self):
        return {"rt": self.rt}

    def state_dict(self):
        return {"stats": self.stats, "rt": self.rt}

    def load_state_dict(self, tensors):
        self.stats.copy_(tensors["stats"])
        self.rt.copy_(tensors["rt"])


def train_one(recipe: str, overrides: list[str]) -> None:
    import ganforge
    from ganforge.config import load_recipe
    from ganforge.training.engine import train
    from ganforge.contract.manager import PluginManager

    class Probe:
        @ganforge.hookimpl
        def ganforge_register_augments(self, register):
            register("rt_probe", RtProbe, "E[sign D(real)] probe (benchmarks/data_limited.py)")

    pm = PluginManager()
    pm.register(Probe(), name="rt_probe")
    train(load_recipe(recipe, overrides), plugins=pm)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, required=True)
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--out", default="runs/data_limited")
    ap.add_argument("--root", default=str(ROOT.parent / "shared" / "data" / "mnist"))
    ap.add_argument("--only", nargs="*", default=list(RUNS))
    ap.add_argument("--recipe", default="mnist_dcgan_r1", help="the recipe trained in every run")
    ap.add_argument("--no-r1", action="store_true", help="train without the recipe's R1 (penalties=[]): D free to overfit")
    ap.add_argument("--set", nargs="*", default=[], help="more recipe overrides for every run (KEY=VALUE)")
    ap.add_argument("--tag", default="", help="a name for these overrides in the output files")
    ap.add_argument("--train", nargs="*", help=argparse.SUPPRESS)  # a child process: the overrides
    args = ap.parse_args()
    if args.train is not None:
        return train_one(args.recipe, args.train)
    base = [f"data.root={args.root}", f"data.args.limit={args.limit}", f"train.steps={args.steps}",
            f"log.eval_every={args.steps // 2}", "log.eval_samples=10000", f"log.every={max(args.steps // 60, 4)}",
            f"log.sample_every={args.steps}", f"log.checkpoint_every={args.steps}", "log.progress=false",
            "train.threads=1", *(["penalties=[]"] if args.no_r1 else []), *args.set]
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled", PYTHONPATH=str(ROOT))
    pending, running, results = list(args.only), {}, {}
    while pending or running:
        while pending and len(running) < 2:
            name = pending.pop(0)
            label = args.recipe + (f"-{args.tag}" if args.tag else "")
            out = Path(args.out) / f"{label}-limit{args.limit}-{name}"
            cmd = [sys.executable, __file__, "--limit", str(args.limit), "--recipe", args.recipe, "--train", f"out_dir={out}", *base, RUNS[name]]
            Path(args.out).mkdir(parents=True, exist_ok=True)
            log = open(Path(args.out) / f"{label}-limit{args.limit}-{name}.log", "w")  # noqa: SIM115 - the child's
            running[name] = (subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), out, time.time())
        time.sleep(5)
        for name, (proc, out, start) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[name]
            rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
            evals = [r for r in rows if any(k.startswith("eval/") for k in r)]
            rt = [(r["step"], r.get("ada_rt", r.get("rt"))) for r in rows if "step" in r and ("rt" in r or "ada_rt" in r)]
            results[name] = {"returncode": proc.returncode, "seconds": round(time.time() - start),
                             "final": evals[-1] if evals else None, "evals": evals, "rt": rt,
                             "ada_p": [(r["step"], r["ada_p"]) for r in rows if "ada_p" in r]}
    fields = ["classifier_score", "frechet_distance", "class_kl", "precision", "recall"]
    print(f"data-limited MNIST, {args.recipe} {' '.join(args.set)}, {args.limit} training digits, {args.steps} steps, R1 {'off' if args.no_r1 else 'on'}, "
          f"{platform.processor() or platform.machine()}, one thread per run, two runs at a time")
    print("| augment | " + " | ".join(fields) + " | r_t at the end | seconds |")
    print("|---" * (len(fields) + 3) + "|")
    for name, r in results.items():
        final = r["final"] or {}
        values = [final.get(f"eval/mnist/{f}") for f in fields]
        print(f"| {name} | " + " | ".join(f"{v:.4g}" if v is not None else "-" for v in values)
              + f" | {r['rt'][-1][1] if r['rt'] else '-'} | {r['seconds']} |")
    stamp = datetime.date.today().isoformat()
    recipe = ("" if args.recipe == "mnist_dcgan_r1" else f"-{args.recipe}") + (f"-{args.tag}" if args.tag else "")
    path = ROOT / "benchmarks" / "results" / f"data_limited{recipe}-{args.limit}{'-no_r1' * args.no_r1}-{stamp}.json"
    path.write_text(json.dumps({"recipe": args.recipe, "overrides": args.set, "limit": args.limit, "steps": args.steps, "r1": not args.no_r1, "machine": platform.processor(),
                                "runs": results}, indent=1))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
