#!/usr/bin/env bash
# One prepared device session (the device tool's `run`): install ganforge offline, check the
# GPU paths, time issue #4's targets. Not run by CI. From the repository root here:
#   mkdir -p .data && cp -r ../shared/data/mnist .data/     (.data/ is git-ignored; carry it)
#   run(command="bash benchmarks/gpu_check.sh", carry=[".data"], timeout_s=540)
# Every figure it prints comes with the device name, torch version and date (JSON in $OUT).
set -euo pipefail
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -2
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"

# 1. the GPU paths train: fp32, bf16, fp16 (GradScaler), a few hundred steps each
for p in no bf16 fp16; do
  ganforge train mnist_seed data.root=.data/mnist train.steps=200 train.precision=$p \
    out_dir=/tmp/run-$p log.progress=false log.every=100 | tail -2
done

# 2. the fast path: the same recipe with the step in CUDA graphs and eager, loss curves side by
#    side (they must match in distribution, not bitwise: different kernels, different RNG
#    streams); lazy R1 with n_critic 2 (several graphs) and bf16; train.cuda_graph=true must hold
for g in true false; do
  ganforge train mnist_seed data.root=.data/mnist train.steps=600 train.cuda_graph=$g \
    out_dir=/tmp/fast-$g log.progress=false log.every=100 | tail -3
done
python3 - <<'PY'
import json, statistics
rows = {g: [json.loads(l) for l in open(f"/tmp/fast-{g}/metrics.jsonl") if '"loss_d"' in l] for g in ("true", "false")}
for k in ("loss_d", "loss_g", "d_real", "d_fake"):
    a, b = [r[k] for r in rows["true"][1:]], [r[k] for r in rows["false"][1:]]
    print(f"{k}: graph mean {statistics.mean(a):.3f} sd {statistics.pstdev(a):.3f} | eager mean {statistics.mean(b):.3f} sd {statistics.pstdev(b):.3f}")
PY
ganforge train toy_grid train.steps=400 train.n_critic=2 "penalties=[{name: r1, weight: 0.1, every: 4}]" \
  train.cuda_graph=true out_dir=/tmp/fast-r1 log.progress=false log.every=100 | tail -3
ganforge train mnist_dcgan data.root=.data/mnist train.steps=300 train.precision=bf16 train.cuda_graph=true \
  out_dir=/tmp/fast-bf16 log.progress=false log.every=100 | tail -3
# class-conditional systems in CUDA graphs (labels gathered on the GPU; labels: data draws by
# inverse CDF from a CDF put on the GPU before the step: issue #27 predicted a host copy there), bf16
ganforge train mnist_cgan data.root=.data/mnist train.steps=300 train.cuda_graph=true train.precision=bf16 \
  out_dir=/tmp/fast-cgan log.progress=false log.every=100 | tail -3
ganforge train mnist_cgan data.root=.data/mnist train.steps=300 train.cuda_graph=true objective.args.labels=data \
  out_dir=/tmp/fast-cgan-data log.progress=false log.every=100 | tail -3
# issue #25 (never run on a GPU yet): ADA (p updated between replays, in place) and DiffAugment
# inside the captured step, with lazy R1 and path length, an AdamW cosine schedule with clipping,
# and a phase that starts later (a second graph pattern); each must say "captured" and train
ganforge train mnist_dcgan_r1 data.root=.data/mnist train.steps=400 train.cuda_graph=true "augment={name: ada, args: {kimg: 5}}" \
  "penalties=[{name: r1, weight: 10, every: 4}, {name: path_length, weight: 2, every: 4}]" optim.lr_decay=none \
  optim.type=adamw "optim.schedule={type: cosine, warmup: 50}" optim.clip=10.0 \
  out_dir=/tmp/fast-ada log.progress=false log.every=100 | tail -3
ganforge train mnist_edges_pix2pix data.root=.data/mnist train.steps=300 train.cuda_graph=true augment=diffaugment \
  phases.D.start=100 out_dir=/tmp/fast-p2p-aug log.progress=false log.every=100 | tail -3

# issue #27's other first-GPU cases: each line must end in training, not a CUDA error
# - a network that reads a tensor value: the watched warm-up finds it; the step stays uncaptured
#   and the run prints why (never a capture error)
python3 - <<'PY'
import ganforge, torch
from ganforge.config import load_recipe
from ganforge.training.engine import train
from ganforge.contract.manager import PluginManager
from ganforge.plugins.mlp import MLPGenerator
class Peeking(MLPGenerator):
    def forward(self, z, y=None):
        out = super().forward(z, y)
        return out if float(out.abs().max()) < 1e9 else out * 0
class P:
    @ganforge.hookimpl
    def ganforge_register_generators(self, register):
        register("peeking", lambda *, z_dim, out_shape, **a: Peeking(z_dim, out_shape, [64, 64], True, "relu", "none"))
pm = PluginManager(); pm.register(P(), name="peeking")
s = train(load_recipe("toy_grid", ["generator=peeking", "train.steps=20", "out_dir=/tmp/peek", "log.progress=false"]), plugins=pm)
print("peeking network:", "captured" if s.stepper.graphs else "uncaptured (expected)", "steps", s.step)
PY
# - the eager path with fused Adam: no host read per phase (non-finite skips through found_inf)
ganforge train mnist_seed data.root=.data/mnist train.steps=200 train.cuda_graph=false train.n_critic=5 \
  out_dir=/tmp/eager-fused log.progress=false log.every=100 | tail -2
# - train.sync_bn with R1: G gets SyncBatchNorm, D keeps its own BatchNorm (no double backward), and says so
ganforge train mnist_dcgan data.root=.data/mnist train.steps=50 train.sync_bn=true "penalties=[{name: r1}]" \
  out_dir=/tmp/syncbn log.progress=false | grep -E "sync_bn|checkpoint"
# - evaluation in batches (log.eval_batch_size) of 20,000 samples
ganforge eval /tmp/run-no --metric mnist --n 20000 --batch-size 2000 | tail -4

# 3. throughput: mnist_seed at batch 64 against the users' reference loop and a bare eager loop
python3 benchmarks/throughput.py mnist_seed data.root=.data/mnist --steps 600 --rounds 30 --warmup 30 --results "$OUT" | tee "$OUT/mnist_seed.txt"

# 4. DCGAN 64x64 at batch 512 (CIFAR-10-shaped data, generated: throughput does not depend on pixels)
python3 - <<'PY'
import pickle, numpy as np, pathlib
d = pathlib.Path("/tmp/cifar/cifar-10-batches-py"); d.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(0)
for i in range(1, 6):
    pickle.dump({"data": rng.integers(0, 256, (2048, 3072), dtype=np.uint8), "labels": [0] * 2048},
                open(d / f"data_batch_{i}", "wb"))
PY
for p in no bf16; do
  python3 benchmarks/throughput.py cifar10_dcgan data.root=/tmp/cifar data.batch_size=512 \
    train.precision=$p train.ema=0 --steps 60 --rounds 10 --warmup 10 --results "$OUT" | tee "$OUT/dcgan64-$p.txt"
done

# 5. the loader path: an image folder read by workers (loader-only images/s next to step images/s)
python3 - <<'PY'
import pathlib
from PIL import Image
d = pathlib.Path("/tmp/imgs"); d.mkdir(exist_ok=True)
for i in range(4096):
    Image.new("RGB", (80, 80), (i % 256, (7 * i) % 256, 128)).save(d / f"{i}.jpg")
PY
python3 benchmarks/throughput.py cifar10_dcgan data.name=image_folder data.root=/tmp/imgs data.args.size=64 \
  data.batch_size=256 train.precision=bf16 --steps 40 --rounds 4 --warmup 5 --results "$OUT" | tee "$OUT/imagefolder.txt"

# 6. StyleGAN2 (issue #36; never run on a GPU yet): the MNIST recipe in bf16 with the step in CUDA
#    graphs and eager (style mixing, lazy R1 and path length on w: several graph patterns), then
#    the CIFAR-10 config's networks (512 channels, conv_clamp 256) at batch 64 for a few steps on
#    generated CIFAR-shaped data, fused and non-fused modulation
for g in true false; do
  ganforge train mnist_stylegan2 data.root=.data/mnist train.steps=300 train.precision=bf16 train.cuda_graph=$g \
    out_dir=/tmp/sg2-$g log.progress=false log.every=100 log.eval_every=0 | tail -3
done
for f in false true; do
  ganforge train cifar10_stylegan2_ada data.root=/tmp/cifar train.steps=40 train.precision=bf16 metrics=[] \
    generator.args.fused=$f out_dir=/tmp/sg2-cifar-$f log.progress=false log.every=20 log.eval_every=0 \
    log.sample_every=0 | tail -2
  grep images_per_s /tmp/sg2-cifar-$f/metrics.jsonl | tail -1 | tee "$OUT/stylegan2-cifar-fused-$f.txt"
done
