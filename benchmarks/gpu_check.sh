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

# 2. throughput: mnist_seed at batch 64 against the users' reference loop and a bare eager loop
python3 benchmarks/throughput.py mnist_seed data.root=.data/mnist --steps 300 --warmup 30 --results "$OUT" | tee "$OUT/mnist_seed.txt"

# 3. DCGAN 64x64 at batch 512 (CIFAR-10-shaped data, generated: throughput does not depend on pixels)
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
    train.precision=$p train.ema=0 --steps 60 --warmup 10 --results "$OUT" | tee "$OUT/dcgan64-$p.txt"
done
