"""Samples and evaluation during training: sample grids (scatter plots for 2-D data),
metrics on generated samples, and Weights & Biases set-up. Main process only."""
from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Any

import torch

from ganforge import plots
from ganforge.data import samples_at

__all__ = ["evaluate", "evaluate_samples", "generate", "init_wandb", "read_sample_file", "write_sample_file",
           "write_samples"]


@torch.no_grad()
def generate(state: Any, noise: Any) -> torch.Tensor:
    """Samples from the system's sampling networks (EMA copies where kept), in eval mode."""
    nets = state.sampler_nets
    modes = {n: m.training for n, m in nets.items()}
    for m in nets.values():
        m.eval()
    try:
        return state.system.generate(nets, noise).float()
    finally:
        for n, m in nets.items():
            m.train(modes[n])


def write_samples(state: Any, noise: Any, stem: str) -> Path | None:
    """The fixed-noise sample grid (or, for vector data, a scatter plot over the data)."""
    if not state.accelerator.is_main_process:
        return None
    samples = generate(state, noise)
    path = state.output_dir / f"{stem}.png"
    if samples.dim() == 2:  # vector data: scatter plot against the data
        n = min(len(state.dataset), 2500)
        g = torch.Generator().manual_seed(0)
        idx = torch.randperm(len(state.dataset), generator=g)[:n].tolist()
        data = samples_at(state.dataset, idx)
        device = state.accelerator.device
        more = generate(state, state.system.noise(2500, device, torch.Generator(device).manual_seed(1)))
        plots.save_scatter(more, data, path, f"{state.config.name}: step {state.step}")
    else:
        plots.save_grid(samples, path, state.system.grid_nrow)
    if state.config.log.wandb:
        import wandb

        state.accelerator.log({"samples": wandb.Image(str(path))}, step=state.step)
    return path


def evaluate(state: Any, metrics: dict[str, Any]) -> dict[str, float]:
    """Run the recipe's metrics on ``log.eval_samples`` samples; log and return the results."""
    if not state.accelerator.is_main_process:
        return {}
    n, device = state.config.log.eval_samples, state.accelerator.device
    noise = state.system.noise(n, device, torch.Generator(device).manual_seed(state.config.seed + 1))
    labels = state.system.labels_of(noise)
    results = evaluate_samples(generate(state, noise).cpu(), state.dataset, metrics,
                               labels.cpu() if labels is not None else None, noise)
    state.metrics = results
    row = {"step": state.step, **{f"eval/{k}": v for k, v in results.items()}}
    state.history.append(row)
    with open(state.output_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    state.accelerator.log({f"eval/{k}": v for k, v in results.items()}, step=state.step)
    state.accelerator.print("eval: " + ", ".join(f"{k}={v:.4g}" for k, v in results.items()))
    return results


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
    if Path(path).suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(arrays, str(path))
    else:
        import numpy as np

        np.savez(path, **{k: v.numpy() for k, v in arrays.items()})


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


def init_wandb(acc: Any, cfg: Any) -> None:
    """Accelerate's wandb tracker; offline (no network) when there is no API key."""
    if not os.environ.get("WANDB_MODE") and not os.environ.get("WANDB_API_KEY"):
        os.environ["WANDB_MODE"] = "offline"
        acc.print("wandb: no WANDB_API_KEY, logging offline (upload later with `wandb sync`)")
    acc.init_trackers(cfg.log.wandb_project, config=cfg.to_dict(),
                      init_kwargs={"wandb": {"name": cfg.name, "dir": str(cfg.output_dir)}})
