"""Train the MNIST classifier used by the `mnist` metric and save its weights.

    python scripts/train_mnist_classifier.py --root ../shared/data/mnist

Reproducible: fixed seed, the MNIST training set only, 3 epochs of Adam with light
random-shift augmentation; prints the test accuracy (>= 99% expected) and writes
plugins/image/assets/mnist_classifier.safetensors.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from ganforge.plugins.image.idx import mnist
from ganforge.plugins.image.mnist_classifier import WEIGHTS, MNISTClassifier


def accuracy(model, dataset, batch=1000):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(dataset), batch):
            x, y = dataset.__getitems__(list(range(i, min(i + batch, len(dataset)))))
            correct += (model(x).argmax(1) == y).sum().item()
    return correct / len(dataset)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", default="../shared/data/mnist")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", default=str(WEIGHTS))
    args = parser.parse_args()
    torch.manual_seed(0)
    train, test = mnist(root=args.root, download=False), mnist(root=args.root, download=False, split="test")
    model = MNISTClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    steps = args.epochs * (len(train) // 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    g = torch.Generator().manual_seed(0)
    start = time.time()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(train), generator=g)
        for i in range(len(train) // 128):
            x, y = train.__getitems__(perm[i * 128:(i + 1) * 128].tolist())
            shift = torch.randint(-2, 3, (2,), generator=g).tolist()  # light augmentation
            x = torch.roll(x, shifts=shift, dims=(2, 3))
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        print(f"epoch {epoch + 1}: test accuracy {accuracy(model, test):.4f} ({time.time() - start:.0f} s)")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
