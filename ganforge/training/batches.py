"""The engine's batches: the training DataLoader, an in-memory dataset kept on the GPU, endless
batches across epochs, batches gathered on the device from the per-epoch permutation (the
fast path), and micro-batches for gradient accumulation."""
from __future__ import annotations

import itertools
import os
from typing import Any

import torch
from accelerate.utils import send_to_device
from torch.utils.data import DataLoader

from ganforge.contract.data import batch_collate, streams
from ganforge.errors import ConfigError, DatasetError

__all__ = ["DeviceBatches", "endless_batches", "make_loader", "micro_batches", "place_dataset"]


def make_loader(cfg: Any, dataset: Any, device: torch.device) -> DataLoader:
    """The training DataLoader: whole batches by one indexing operation for in-memory datasets;
    worker processes, pinned memory (on CUDA) and persistent workers for datasets read from
    files; shuffled, with the last incomplete batch dropped. A stream is read in the training
    process (its epoch, which decides its order, must reach the reader) and batched as it comes."""
    if streams(dataset):
        return DataLoader(dataset, batch_size=cfg.data.batch_size, drop_last=True, num_workers=0,
                          generator=torch.Generator().manual_seed(cfg.seed))  # (not the noise's global RNG)
    batched = hasattr(dataset, "__getitems__")
    workers = 0 if batched else _workers(cfg.data.num_workers)
    return DataLoader(
        dataset, batch_size=cfg.data.batch_size, shuffle=True,
        drop_last=True,  # constant batch shapes: no odd last batch (the seed script's third bug)
        collate_fn=batch_collate if batched else None,
        num_workers=workers, persistent_workers=workers > 0,
        pin_memory=device.type == "cuda" and not batched,
        # its own generator: starting an epoch must not draw from the global RNG that the
        # noise comes from, or a resumed run would diverge from an uninterrupted one
        generator=torch.Generator().manual_seed(cfg.seed),
    )


def _workers(setting: int | str) -> int:
    """data.num_workers: a number, or auto = one per core beyond the training process's, up to 8."""
    if setting == "auto":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(1, min(8, cores - 1))
    return int(setting)


def place_dataset(dataset: Any, setting: bool | str, acc: Any) -> None:
    """Keep an in-memory dataset on the GPU (as stored: uint8 images are 4x smaller than
    float), so batches are gathered there instead of copied from the host every step. Every
    tensor attribute of the dataset moves (``data``, ``labels``, and e.g. Stacked MNIST's
    digits, which its ``data`` indexes)."""
    data = getattr(dataset, "data", None)
    if setting is False or not isinstance(data, torch.Tensor) or acc.device.type == "cpu":
        if setting is True and not isinstance(data, torch.Tensor):
            raise ConfigError("data.on_device=true needs an in-memory dataset (mnist, cifar10, toy_*); "
                              "this one is read from files by DataLoader workers")
        return
    tensors = {k: v for k, v in vars(dataset).items() if isinstance(v, torch.Tensor)}
    size = sum(t.numel() * t.element_size() for t in tensors.values())
    if setting == "auto" and acc.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(acc.device)
        if size > free // 4:
            acc.print(f"data stays in host memory: {size / 2**30:.1f} GiB is over a quarter of the "
                      f"GPU's free memory (data.on_device=true forces it)")
            return
    for name, tensor in tensors.items():  # data, labels, and whatever else fetch() indexes
        setattr(dataset, name, tensor.to(acc.device))


def endless_batches(state: Any, loader: Any):
    """Endless batches; remembers the position (epoch, batch) for exact resume. A stream is
    resumed by reading its epoch again from the start (the same order: it is a function of
    its seed and the epoch) and passing over the batches already trained on."""
    acc = state.accelerator
    stream = streams(loader.dataset)
    first_epoch = True
    while True:
        if stream:
            loader.dataset.set_epoch(state.epoch)
            it = itertools.islice(loader, state.batch_in_epoch, None)
            if first_epoch and acc.num_processes > 1:  # every rank still at the start: they agree
                it = _agreed_start(it, state)
        else:
            loader.set_epoch(state.epoch)
            it = acc.skip_first_batches(loader, state.batch_in_epoch) if state.batch_in_epoch else loader
        first_epoch = False
        for batch in it:
            state.batch_in_epoch += 1
            yield send_to_device(batch, acc.device) if stream else batch
        if state.batch_in_epoch == 0:
            raise DatasetError(f"dataset '{state.config.data.name}' gave no complete batch of "
                               f"{state.config.data.batch_size} in epoch {state.epoch} on process "
                               f"{acc.process_index}; it holds too few samples for this batch size and process count")
        state.epoch, state.batch_in_epoch = state.epoch + 1, 0


def _agreed_start(it: Any, state: Any):
    """A stream's first batch on every process, or one clear error on every process when any has
    none (its share of a small stream is empty): otherwise that process would stop while the
    others wait for it in the first all-reduce (gloo: "Connection closed by peer"). Checked once,
    before the first step, when every rank is at the same point."""
    acc = state.accelerator
    it = iter(it)
    first = next(it, None)
    has = torch.tensor(0.0 if first is None else 1.0, device=acc.device)
    ready = int(acc.reduce(has, reduction="sum").item())
    if ready < acc.num_processes:
        raise DatasetError(f"dataset '{state.config.data.name}' gave no complete batch of "
                           f"{state.config.data.batch_size} on {acc.num_processes - ready} of {acc.num_processes} "
                           f"processes: the stream holds too few samples for this batch size and process count "
                           f"(each process reads its own share); lower data.batch_size or use fewer processes")
    yield first
    yield from it


class DeviceBatches:
    """Batch indices for the fast path (and one GPU holding the data): the eager loader's order,
    gathered on the device. Each epoch's permutation is Accelerate's seedable sampler's
    (``randperm(N)`` from a generator seeded with ``seed + epoch``), uploaded once per epoch;
    ``indices`` is a fixed device tensor the (captured) step reads ``fresh`` rows of."""

    def __init__(self, state: Any, fresh: int, batch_size: int):
        self.state, self.batch_size = state, batch_size
        self.per_epoch = len(state.dataset) // batch_size  # drop_last, like the loader
        self.indices = torch.zeros(fresh, batch_size, dtype=torch.long, device=state.accelerator.device)
        self._epoch, self._perm = -1, None

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.state.config.seed + epoch)
            self._perm = torch.randperm(len(self.state.dataset), generator=g).to(self.indices.device)
            self._epoch = epoch
        return self._perm

    def fill(self, n: int) -> None:
        """The next ``n`` batches' indices into ``indices[:n]``, advancing the data position."""
        s, b = self.state, self.batch_size
        for k in range(n):
            if s.batch_in_epoch >= self.per_epoch:
                s.epoch, s.batch_in_epoch = s.epoch + 1, 0
            perm = self._permutation(s.epoch)
            self.indices[k].copy_(perm[s.batch_in_epoch * b:(s.batch_in_epoch + 1) * b], non_blocking=True)
            s.batch_in_epoch += 1


def micro_batches(batch: Any, k: int) -> list[Any]:
    """``train.accumulate``: a batch (a tensor, or a tuple/list of them: data, labels) as ``k``
    equal micro-batches along the first dimension."""
    if k == 1:
        return [batch]
    if torch.is_tensor(batch):
        return list(batch.chunk(k))
    if isinstance(batch, (tuple, list)):
        return [type(batch)(parts) for parts in zip(*(micro_batches(x, k) for x in batch), strict=True)]
    raise TypeError(f"train.accumulate splits batches of tensors; this dataset's batches are {type(batch).__name__}")
