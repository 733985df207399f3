"""Saving a running job and restoring it exactly: every network, EMA copy and optimizer of the
system by name, the system's persistent state and every rank's RNG (files by the main
process only, see :mod:`ganforge.training.checkpoint` for the format), and the resume policy."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import set_seed

from ganforge.training import checkpoint as ckpt
from ganforge.recipe.load import recipe_from_dict
from ganforge.recipe.types import Recipe
from ganforge.errors import CheckpointError, ConfigError, GanforgeError

__all__ = ["load_checkpoint", "resume_or_refuse", "save_checkpoint"]


def _gather(acc: Any, obj: Any) -> list[Any]:
    """``obj`` from every rank, in rank order."""
    if acc.num_processes == 1:
        return [obj]
    out = [None] * acc.num_processes
    torch.distributed.all_gather_object(out, obj)
    return out


def save_checkpoint(state: Any, plugins: Any, pause_hook: Any = None) -> Path | None:
    """Write a checkpoint of ``state``; None (and a message) if a network holds NaN/Inf."""
    acc, cfg = state.accelerator, state.config
    plain = {n: acc.unwrap_model(m) for n, m in state.nets.items()}
    bad = {name: [k for k, v in module.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
           for name, module in plain.items()}
    bad = {name: keys for name, keys in bad.items() if keys}
    any_bad = torch.tensor(float(bool(bad)), device=acc.device)
    if acc.num_processes > 1:  # every rank returns here, or none: the gathers below are collective
        any_bad = acc.reduce(any_bad, reduction="sum")
    if any_bad > 0:
        where = "; ".join(f"network {n}: {', '.join(k[:5])}" for n, k in bad.items()) or "on another rank"
        acc.print(f"not writing a checkpoint at step {state.step}: non-finite values ({where})")
        return None
    all_rng = _gather(acc, ckpt.rng_state())
    system_state = {k: v.detach().cpu() for k, v in state.system.state_dict().items()}
    all_system = _gather(acc, system_state)
    adaptive = state.augment is not None and state.augment.adaptive  # (p agrees across ranks; its statistics
    all_augment = _gather(acc, {k: v.detach().cpu() for k, v in state.augment.augment.state_dict().items()}) \
        if adaptive else []  # since the last update are each rank's own: every rank's is kept)
    final = state.output_dir / "checkpoints" / f"{ckpt.PREFIX}{state.step:08d}"
    if acc.is_main_process:
        tensors = {f"model.{n}": ckpt.model_state(m) for n, m in plain.items()}
        tensors.update({f"ema.{n}": ckpt.model_state(e.module) for n, e in state.emas.items()})
        opt_meta = {}
        for n, opt in state.optimizers.items():
            tensors[f"optim.{n}"], opt_meta[n] = ckpt.split_optimizer_state(opt.state_dict())
        for rank, (t, _) in enumerate(all_rng):
            tensors[f"rng-rank{rank}"] = t
        if any(all_system):
            for rank, t in enumerate(all_system):
                tensors[f"system-rank{rank}"] = t
        for i, (p, fn) in enumerate(state.penalties):  # stateful penalties (path length's running mean)
            if callable(getattr(fn, "state_dict", None)):
                tensors[f"penalty.{i}.{p.name}"] = {k: v.detach().cpu() for k, v in fn.state_dict().items()}
        for rank, t in enumerate(all_augment):
            tensors["augment" if rank == 0 else f"augment-rank{rank}"] = t
        scaler = getattr(acc, "scaler", None)
        meta = {
            "step": state.step, "phase_steps": dict(state.phase_steps), "epoch": state.epoch,
            "batch_in_epoch": state.batch_in_epoch, "skipped": state.skipped,
            "world_size": acc.num_processes, "sample_shape": list(state.dataset.sample_shape),
            "num_classes": getattr(state.dataset, "num_classes", None),
            "networks": {n: spec.kind for n, spec in state.system.networks.items()},
            "ema_n_averaged": {n: int(e.n_averaged) for n, e in state.emas.items()},
            "optimizers": opt_meta, "rng": [m for _, m in all_rng],
            "scaler": scaler.state_dict() if scaler is not None else None,
            "recipe": cfg.to_dict(),
            "plugins": {n: [i.distribution, i.version, i.module] for n, i in plugins.info.items()},
        }
        ckpt.write_checkpoint(final, tensors, meta, pause_hook)
        ckpt.rotate(final.parent, cfg.log.keep)
    acc.wait_for_everyone()
    state.last_checkpoint = final
    if acc.is_main_process:
        plugins.checkpoint_saved(state, str(final))
    return final


def load_checkpoint(state: Any, folder: Path) -> None:
    """Restore networks, EMA copies, optimizers, system state, RNG and data position."""
    acc, cfg = state.accelerator, state.config
    raw = ckpt.read_meta(folder)
    meta = ckpt.upgrade_meta(raw)
    saved = recipe_from_dict(meta["recipe"])

    def tensors(name: str) -> dict[str, torch.Tensor]:
        return ckpt.load_tensors(folder / f"{ckpt.stem(meta, name)}.safetensors")

    if set(meta["networks"]) != set(state.nets):
        raise CheckpointError(f"checkpoint {folder} holds networks {', '.join(meta['networks'])}, but this "
                              f"recipe's objective '{cfg.objective.name}' has {', '.join(state.nets)}")
    for name, module in state.nets.items():
        module = acc.unwrap_model(module)
        weights, own = tensors(f"model.{name}"), module.state_dict()
        mismatched = sorted(set(own) ^ set(weights)
                            | {k for k in set(own) & set(weights) if own[k].shape != weights[k].shape})
        if mismatched:
            raise CheckpointError(
                f"checkpoint {folder} does not fit this recipe's network {name} "
                f"({state.system.networks[name].kind}): mismatched tensors "
                f"{', '.join(mismatched[:10])}{' ...' if len(mismatched) > 10 else ''}")
        module.load_state_dict(weights)
    differences = [d for d in _diff(saved.to_dict(), cfg.to_dict())
                   if not d.startswith(("resume", "train.steps", "out_dir"))]
    if differences:
        acc.print(f"warning: resuming with a recipe that differs from the checkpoint's: {'; '.join(differences)}")
    for name, opt in state.optimizers.items():
        # the moments come from the checkpoint; lr, betas, weight decay and the kernel flags are
        # this run's (the recipe's), as the warning above says
        settings = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
        opt.load_state_dict(ckpt.join_optimizer_state(tensors(f"optim.{name}"), meta["optimizers"][name]))
        for group, own in zip(opt.param_groups, settings, strict=True):
            group.update(own)
    if saved.train.steps != cfg.train.steps:
        _warn_schedule_jump(state, saved, meta["step"])
    for name, ema in state.emas.items():
        if f"{ckpt.stem(meta, f'ema.{name}')}.safetensors" in raw["files"]:
            ema.module.load_state_dict(tensors(f"ema.{name}"))
            ema.n_averaged.fill_(meta["ema_n_averaged"].get(name) or 0)
    scaler = getattr(acc, "scaler", None)
    if scaler is not None and meta.get("scaler"):
        scaler.load_state_dict(meta["scaler"])
    for i, (p, fn) in enumerate(state.penalties):
        if callable(getattr(fn, "load_state_dict", None)) and f"penalty.{i}.{p.name}.safetensors" in raw["files"]:
            fn.load_state_dict(ckpt.load_tensors(folder / f"penalty.{i}.{p.name}.safetensors"))
    rank, same_world = acc.process_index, meta["world_size"] == acc.num_processes
    if state.augment is not None and state.augment.adaptive and "augment.safetensors" in raw["files"]:
        own = f"augment-rank{rank}.safetensors"  # (another number of processes: rank 0's statistics)
        name = own if same_world and rank and own in raw["files"] else "augment.safetensors"
        state.augment.augment.load_state_dict(ckpt.load_tensors(folder / name))
    system_file = f"system-rank{rank if same_world else 0}.safetensors"
    if system_file in raw["files"]:
        state.system.load_state_dict(ckpt.load_tensors(folder / system_file))
    if same_world:
        ckpt.set_rng_state(ckpt.load_tensors(folder / f"rng-rank{rank}.safetensors"), meta["rng"][rank])
    else:
        acc.print(f"note: checkpoint written by {meta['world_size']} process(es), resumed on "
                  f"{acc.num_processes}: RNG streams restart from the seed"
                  + (", every rank's system state from rank 0's" if system_file in raw["files"] else ""))
        set_seed(cfg.seed + meta["step"], device_specific=True)
    state.step, state.phase_steps = meta["step"], dict(meta["phase_steps"])
    state.epoch, state.batch_in_epoch, state.skipped = meta["epoch"], meta["batch_in_epoch"], meta["skipped"]


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [f"{prefix[:-1]}: {a!r} -> {b!r}"]


def resume_or_refuse(state: Any) -> None:
    """Resume from ``recipe.resume`` (a folder or "auto"), or refuse to overwrite a run. Rank 0
    decides and tells the others, so that every rank resumes from the same checkpoint; a rank
    that cannot see it (several machines without a shared folder) stops all of them."""
    acc = state.accelerator
    decision = [None, None, False]  # (checkpoint folder, refusal, rank 0 sees it)
    if acc.is_main_process:
        try:
            decision[0] = _choose(state)
        except GanforgeError as err:
            decision[1] = str(err)
        decision[2] = bool(decision[0]) and (Path(decision[0]) / "meta.json").is_file()
    if acc.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        broadcast_object_list(decision)
    if decision[1]:
        raise GanforgeError(decision[1])
    resume_from = Path(decision[0]) if decision[0] else None
    if resume_from is not None and acc.num_processes > 1 and decision[2]:  # else load_checkpoint says why
        unseen = torch.tensor(float(not (resume_from / "meta.json").is_file()), device=acc.device)
        if acc.reduce(unseen, reduction="sum") > 0:
            raise GanforgeError(f"checkpoint {resume_from}, chosen by rank 0, is not visible on every rank; "
                                f"with several machines out_dir must be a folder they share")
    if resume_from is not None:
        load_checkpoint(state, resume_from)
        acc.print(f"resumed from {resume_from} at step {state.step}")
    if acc.is_main_process:
        _continue_metrics(state, resumed=resume_from is not None)
        if resume_from is not None:
            moved = ckpt.set_aside_after(state.output_dir / "checkpoints", state.step)
            if moved:
                acc.print(f"checkpoints after step {state.step} belong to the abandoned run and were set aside: "
                          f"{', '.join(p.name for p in moved)}")


def _choose(state: Any) -> str | None:
    cfg, acc, out = state.config, state.accelerator, state.output_dir
    if cfg.resume == "auto":
        found = ckpt.latest_valid(out / "checkpoints", log=acc.print)
        if found is None:
            acc.print(f"resume=auto: no valid checkpoint in {out / 'checkpoints'}; starting fresh")
        return str(found) if found else None
    if cfg.resume:
        folder = Path(cfg.resume)
        if not (folder / "meta.json").exists() and (folder / "checkpoints").is_dir():
            raise GanforgeError(f"resume={cfg.resume} is a run folder, not a checkpoint; use resume=auto "
                                f"out_dir={cfg.resume} (its newest valid checkpoint), or resume="
                                f"{folder / 'checkpoints'}/step-...")
        return str(folder)
    if ckpt.list_checkpoints(out / "checkpoints"):
        raise GanforgeError(f"{out} already holds checkpoints of an earlier run; pass resume=auto to continue "
                            f"it, or out_dir=OTHER_FOLDER for a new run")
    return None


def _continue_metrics(state: Any, resumed: bool) -> None:
    """``metrics.jsonl`` tells one story: on resume, rows the interrupted run logged after the
    checkpoint's step are dropped (they are logged again) and the earlier ones feed the loss
    plot; a fresh run never appends to a file an earlier run left (it is moved aside)."""
    path = state.output_dir / "metrics.jsonl"
    if not path.exists():
        return
    if not resumed:
        aside = path.with_name(f"metrics-before-{int(path.stat().st_mtime)}.jsonl")
        os.replace(path, aside)
        state.accelerator.print(f"note: {path} held an earlier run's rows; moved to {aside.name}")
        return
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short when the process was killed
            continue
    keep = [r for r in rows if r.get("step", 0) <= state.step]
    if len(keep) < len(rows):
        tmp = path.with_name(".metrics.jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in keep))
        os.replace(tmp, path)
        state.accelerator.print(f"note: dropped {len(rows) - len(keep)} row(s) of {path.name} logged after "
                                f"step {state.step} by the interrupted run")
    state.history = keep


def _warn_schedule_jump(state: Any, saved: Recipe, step: int) -> None:
    """A schedule that depends on ``train.steps`` (linear, cosine, a fraction) jumps when a
    resumed run changes it: say by how much, per optimizer."""
    from ganforge.recipe.schedule import factor
    from ganforge.training.optim import choices

    cfg, at = state.config, float(step)
    try:
        before = choices(saved, state.system)
    except ConfigError:
        return
    jumps: dict[tuple, list[str]] = {}
    for name, choice in choices(cfg, state.system).items():
        old, new = before[name].schedule, choice.schedule
        if old is None or new is None or new.type == "exponential" and new.per == "epoch":
            continue
        a, b = float(factor(old, at, saved.train.steps)), float(factor(new, at, cfg.train.steps))
        if a != b:
            jumps.setdefault((new.type, a, b), []).append(name)
    for (kind, a, b), names in jumps.items():
        state.accelerator.print(
            f"warning: train.steps changed from {saved.train.steps} to {cfg.train.steps}: the {kind} schedule of "
            f"optimizer{'s' * (len(names) > 1)} {', '.join(names)} jumps from {a:.3g} to {b:.3g} of the base "
            f"learning rate at step {step}")
