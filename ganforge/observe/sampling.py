"""Samples and evaluation during training: sample grids (scatter plots for 2-D data),
metrics on generated samples, and Weights & Biases set-up. Main process only."""
from __future__ import annotations

import contextlib
import inspect
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ganforge.observe import plots
from ganforge.contract.data import samples_at
from ganforge.observe.files import atomic_path

__all__ = ["evaluate", "evaluate_samples", "generate", "read_sample_file", "rows", "sampling_mode", "sharded_generate",
           "write_sample_file", "write_samples"]


@contextlib.contextmanager
def sampling_mode(system: Any, nets: dict[str, torch.nn.Module]) -> Iterator[None]:
    """The networks as the system makes samples with them (``system.test_mode``): eval mode;
    or ``"train"`` (pix2pix's test time: dropout on, BatchNorm from the batch) with BatchNorm's
    running statistics and counters untouched (momentum 0 meanwhile) and torch's random
    streams restored afterwards, so that making samples never changes training. The modes
    the networks had come back."""
    mode = getattr(system, "test_mode", "eval")
    if mode not in ("eval", "train"):
        raise ValueError(f"test_mode is 'eval' or 'train', got {mode!r}")
    modes = {n: m.training for n, m in nets.items()}
    norms = [x for m in nets.values() for x in m.modules() if isinstance(x, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [(x.momentum, x.num_batches_tracked.clone() if x.num_batches_tracked is not None else None)
             for x in norms]
    devices = sorted({p.device.index or 0 for m in nets.values() for p in m.parameters() if p.device.type == "cuda"})
    try:
        # (eval mode draws nothing: only train mode's dropout needs the streams kept)
        with torch.random.fork_rng(devices=devices, enabled=mode == "train"):
            for m in nets.values():
                m.train(mode == "train")
            if mode == "train":
                for x in norms:
                    x.momentum = 0.0  # batch statistics used, running ones kept exactly
            yield
    finally:
        for x, (momentum, tracked) in zip(norms, saved, strict=True):
            x.momentum = momentum
            if tracked is not None:
                x.num_batches_tracked.copy_(tracked)
        for n, m in nets.items():
            m.train(modes[n])


@torch.no_grad()
def generate(state: Any, noise: Any) -> torch.Tensor:
    """Samples from the system's sampling networks (EMA copies where kept), in its test mode."""
    nets = state.sampler_nets
    with sampling_mode(state.system, nets):
        return state.system.generate(nets, noise).float()


def write_samples(state: Any, noise: Any, stem: str) -> tuple[Path | None, str]:
    """The fixed-noise sample grid (for vector data, a scatter plot over the data; or what the
    system writes itself, :meth:`ganforge.contract.system.GANSystem.write_samples`): its path (None on
    the other processes) and what it is ("sample grid", "scatter plot" or "samples")."""
    if not state.accelerator.is_main_process:
        return None, ""
    samples = generate(state, noise)
    path = state.output_dir / f"{stem}.png"
    written = state.system.write_samples(samples, noise, path)  # (the system's own form: a vocoder's wavs)
    if written is None and samples.dim() == 2:  # vector data: scatter plot against the data
        n = min(len(state.dataset), 2500)
        g = torch.Generator().manual_seed(0)
        idx = torch.randperm(len(state.dataset), generator=g)[:n].tolist()
        data = samples_at(state.dataset, idx)
        device = state.accelerator.device
        more = generate(state, state.system.noise(2500, device, torch.Generator(device).manual_seed(1)))
        plots.save_scatter(more, data, path, f"{state.config.name}: step {state.step}")
    elif written is None:
        plots.save_grid(samples, path, state.system.grid_nrow)
    if state.accelerator.trackers:  # log.trackers: the grid to those that take images
        from ganforge.observe.trackers import log_image

        log_image(state.accelerator, path, state.step)
    return path, ("samples" if written is not None else "scatter plot" if samples.dim() == 2 else "sample grid")


def evaluate(state: Any, metrics: dict[str, Any]) -> dict[str, float]:
    """Run the recipe's metrics on ``log.eval_samples`` samples, generated in batches of
    ``log.eval_batch_size`` shared among the processes (:func:`sharded_generate`); the main
    process computes the metrics once, logs and returns them (the others return ``{}``)."""
    acc, log = state.accelerator, state.config.log
    n, device = log.eval_samples, acc.device
    noise = state.system.noise(n, device, torch.Generator(device).manual_seed(state.config.seed + 1))
    samples = sharded_generate(state.system, state.sampler_nets, noise, log.eval_batch_size, acc)
    if not acc.is_main_process:
        return {}
    labels = state.system.labels_of(noise)
    results = evaluate_samples(samples, state.dataset, metrics, labels.cpu() if labels is not None else None, noise)
    state.metrics = results
    row = {"step": state.step, **{f"eval/{k}": v for k, v in results.items()}}
    state.history.append(row)
    with open(state.output_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    acc.log({f"eval/{k}": v for k, v in results.items()}, step=state.step)
    acc.print("eval: " + ", ".join(f"{k}={v:.4g}" for k, v in results.items()))
    return results


def rows(noise: Any, a: int, b: int) -> Any:
    """Rows ``a..b`` of generator inputs: a tensor, a tuple of tensors such as ``(z, labels)``,
    or an object that slices itself (an image-to-image system's inputs)."""
    return tuple(x[a:b] for x in noise) if isinstance(noise, (tuple, list)) else noise[a:b]


def _length(noise: Any) -> int:
    return len(noise[0]) if isinstance(noise, (tuple, list)) else len(noise)


@torch.no_grad()
def sharded_generate(system: Any, nets: dict[str, Any], noise: Any, batch_size: int, acc: Any = None) -> torch.Tensor | None:
    """Samples for ``noise`` (in eval mode, as :func:`generate`), made ``batch_size`` at a
    time, so memory is bounded by the batch, not by the number of samples. With several
    processes batch ``i`` is made by process ``i % world`` and the batches are gathered in
    order on the main process, which returns them all on the CPU (the others return None);
    the same seeds give the same samples whatever the number of processes.

    Inputs that are not a tensor or a tuple of tensors (an image-to-image system's held-out
    split, whose ``generate`` may return more rows than it was given: CycleGAN's both
    directions) are generated in one call on the main process alone."""
    world = acc.num_processes if acc is not None else 1
    rank = acc.process_index if acc is not None else 0
    main = rank == 0
    total = _length(noise)
    starts = list(range(0, total, batch_size))
    shard = world > 1
    pieces: list[torch.Tensor] = []
    with sampling_mode(system, nets):
        if not (torch.is_tensor(noise) or isinstance(noise, (tuple, list))):
            return system.generate(nets, noise).float().cpu() if main else None
        if not shard:
            return torch.cat([system.generate(nets, rows(noise, a, a + batch_size)).float().cpu() for a in starts])
        from accelerate.utils import gather_object

        for first in range(0, len(starts), world):  # a round: one batch per process
            mine = first + rank
            piece = None
            if mine < len(starts):
                a = starts[mine]
                piece = system.generate(nets, rows(noise, a, a + batch_size)).float().cpu()
            gathered = gather_object([piece])  # every process's batch of this round, by rank
            if main:
                pieces.extend(p for p in gathered if p is not None)
    return torch.cat(pieces) if main else None


def evaluate_samples(samples: torch.Tensor, dataset: Any, metrics: dict[str, Any],
                     labels: torch.Tensor | None = None, inputs: Any = None) -> dict[str, float]:
    """Run metrics on given samples (used by ``ganforge eval``). ``labels``: the classes the
    samples were asked for (conditional runs), passed to metrics that take ``labels``;
    ``inputs``: what the system generated them from (its noise: latent vectors, or the images
    an image-to-image system translated, with their targets), passed to metrics that take it."""
    out: dict[str, float] = {}
    for name, metric in metrics.items():
        kwargs = {"labels": labels} if labels is not None and _takes(metric, "labels") else {}
        if inputs is not None and _takes(metric, "inputs"):
            kwargs["inputs"] = inputs
        out.update({f"{name}/{k}": float(v) for k, v in metric(samples, dataset, **kwargs).items()})
    return out


def _takes(fn: Any, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def write_sample_file(path: Path, samples: torch.Tensor, labels: torch.Tensor | None = None) -> None:
    """The sample-file format of ``ganforge sample --out X.npz | X.safetensors``: ``samples``,
    float32 (N, *sample_shape) in the data's range (images in [-1, 1]), and for
    class-conditional runs ``labels``, int64 (N,), the class each sample was made for."""
    arrays = {"samples": samples.detach().float().cpu().contiguous()}
    if labels is not None:
        arrays["labels"] = labels.detach().long().cpu().contiguous()
    with atomic_path(path) as tmp:
        if Path(path).suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(arrays, str(tmp))
        else:
            import numpy as np

            with open(tmp, "wb") as f:  # (a file object: np.savez adds no suffix)
                np.savez(f, **{k: v.numpy() for k, v in arrays.items()})


def read_sample_file(path: Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(samples, labels or None)`` from a file :func:`write_sample_file` wrote."""
    if Path(path).suffix == ".safetensors":
        from safetensors.torch import load_file

        arrays = load_file(str(path))
    else:
        import numpy as np

        with np.load(path, allow_pickle=False) as data:
            arrays = {k: torch.from_numpy(data[k]) for k in data.files}
    return arrays["samples"], arrays.get("labels")
