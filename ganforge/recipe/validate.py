"""Recipe checks that need more than types: ranges, choices, and names that must be set."""
from __future__ import annotations

import math
from typing import Any

from ganforge.errors import ConfigError, did_you_mean
from ganforge.recipe.optimizers import resolve_type
from ganforge.recipe.ramps import validate_ramp
from ganforge.recipe.schedule import validate_schedule
from ganforge.recipe.types import Ramp, Recipe

__all__ = ["PRECISIONS", "validate"]

PRECISIONS = ("auto", "no", "bf16", "fp16")


def _check_adam(where: str, lr: float | None, betas: list | None, decay: Any, lr_key: str, steps: int) -> None:
    """Adam's settings: a positive finite learning rate, two betas in [0, 1), decay >= 0 (each
    beta and the decay a number or a ramp between such numbers)."""
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        raise ConfigError(f"{where}.{lr_key} must be a positive number, got {lr}")
    if betas is not None:
        if len(betas) != 2:
            raise ConfigError(f"{where}.betas needs two numbers, got {betas}")
        for i, b in enumerate(betas):
            if isinstance(b, Ramp):
                validate_ramp(b, f"{where}.betas.{i}", steps, 0.0, 1.0, "in [0, 1)")
            elif not 0.0 <= b < 1.0:
                raise ConfigError(f"{where}.betas must each be in [0, 1) (e.g. [0.5, 0.999]), got {betas}")
    if isinstance(decay, Ramp):
        validate_ramp(decay, f"{where}.weight_decay", steps, 0.0, math.inf, ">= 0")
    elif decay is not None and not (math.isfinite(decay) and decay >= 0):
        raise ConfigError(f"{where}.weight_decay must be >= 0, got {decay}")


def validate(recipe: Recipe) -> None:
    """Checks that need more than types."""
    t = recipe.train
    if t.precision not in PRECISIONS:
        raise ConfigError(
            f"train.precision must be one of {', '.join(PRECISIONS)}, got '{t.precision}'"
            f"{did_you_mean(t.precision, PRECISIONS)}"
        )
    if t.channels_last not in ("auto", True, False):
        raise ConfigError(f"train.channels_last must be auto, true or false, got '{t.channels_last}'")
    if t.cuda_graph not in ("auto", True, False):
        raise ConfigError(f"train.cuda_graph must be auto, true or false, got '{t.cuda_graph}'")
    if t.autocast_cache not in ("auto", True, False):
        raise ConfigError(f"train.autocast_cache must be auto, true or false, got '{t.autocast_cache}'")
    if recipe.optim.fused not in ("auto", True, False):
        raise ConfigError(f"optim.fused must be auto, true or false, got '{recipe.optim.fused}'")
    if t.nonfinite not in ("skip", "stop"):
        raise ConfigError(f"train.nonfinite must be 'skip' or 'stop', got '{t.nonfinite}'")
    for key in ("steps", "n_critic", "z_dim"):
        if getattr(t, key) < 1:
            raise ConfigError(f"train.{key} must be >= 1, got {getattr(t, key)}")
    if not 0.0 <= t.ema < 1.0:
        raise ConfigError(f"train.ema is a decay in [0, 1), got {t.ema} (0 turns EMA off)")
    if not (math.isfinite(t.ema_rampup) and t.ema_rampup >= 0):
        raise ConfigError(f"train.ema_rampup caps the EMA's half-life at this fraction of the images seen, >= 0 "
                          f"(StyleGAN2-ADA: 0.05; 0: off), got {t.ema_rampup}")
    if recipe.data.on_device not in ("auto", True, False):
        raise ConfigError(f"data.on_device must be auto, true or false, got '{recipe.data.on_device}'")
    threads = t.threads
    if threads != "auto" and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"train.threads must be auto or a number >= 1, got '{threads}'")
    workers = recipe.data.num_workers
    if workers != "auto" and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
        raise ConfigError(f"data.num_workers must be auto or a number >= 0, got '{workers}'")
    if recipe.data.batch_size < 1:
        raise ConfigError(f"data.batch_size must be >= 1, got {recipe.data.batch_size}")
    if t.accumulate < 1 or recipe.data.batch_size % t.accumulate:
        raise ConfigError(f"train.accumulate splits each batch into equal micro-batches: a divisor of data.batch_size "
                          f"({recipe.data.batch_size}) >= 1, got {t.accumulate}")
    if recipe.optim.lr_decay not in ("none", "linear"):
        raise ConfigError(f"optim.lr_decay must be 'none' or 'linear', got '{recipe.optim.lr_decay}'")
    start = recipe.optim.lr_decay_start
    if (isinstance(start, bool) or not isinstance(start, (int, float))
            or not (0 <= start < 1 and round(start * recipe.train.steps) < recipe.train.steps
                    if isinstance(start, float) else 0 <= start < recipe.train.steps)):  # (0.96 of 10 steps is 10)
        raise ConfigError(f"optim.lr_decay_start is where the linear decay begins: a step from 0 to "
                          f"train.steps - 1 ({recipe.train.steps - 1}) or a fraction of train.steps in [0, 1) "
                          f"(0.5: the second half); got {start!r}")
    _check_adam("optim", recipe.optim.lr_g, recipe.optim.betas, recipe.optim.weight_decay, "lr_g", t.steps)
    _check_adam("optim", recipe.optim.lr_d, None, None, "lr_d", t.steps)
    if recipe.seed < 0:
        raise ConfigError(f"seed must be >= 0, got {recipe.seed}")
    if not (math.isfinite(recipe.log.checkpoint_minutes) and recipe.log.checkpoint_minutes >= 0):
        raise ConfigError(f"log.checkpoint_minutes must be >= 0 (0: off), got {recipe.log.checkpoint_minutes}")
    for key in ("sample_every", "eval_every", "checkpoint_every"):
        if getattr(recipe.log, key) < 0:
            raise ConfigError(f"log.{key} must be >= 0 (0: only at the end), got {getattr(recipe.log, key)}")
    if recipe.log.film_every < 0:
        raise ConfigError(f"log.film_every must be >= 0 (0: no film), got {recipe.log.film_every}")
    for name, o in recipe.optimizers.items():
        _check_adam(f"optimizers.{name}", o.lr, o.betas, o.weight_decay, "lr", t.steps)
    _check_schedules(recipe)
    for i, p in enumerate(recipe.penalties):
        if p.every < 1:
            raise ConfigError(f"penalties.{i}.every must be >= 1, got {p.every}")
        if isinstance(p.weight, Ramp):
            validate_ramp(p.weight, f"penalties.{i}.weight", t.steps, 0.0, math.inf, "a finite number >= 0")
        elif not math.isfinite(p.weight):
            raise ConfigError(f"penalties.{i}.weight must be a finite number, got {p.weight}")
    for key in ("every", "keep", "n_samples", "eval_samples", "eval_batch_size"):
        if getattr(recipe.log, key) < 1:
            raise ConfigError(f"log.{key} must be >= 1, got {getattr(recipe.log, key)}")
    for part in ("generator", "discriminator", "loss", "objective"):
        if not getattr(recipe, part).name:
            raise ConfigError(f"Recipe key '{part}.name' is empty: name a registered {part}")


def _check_schedules(recipe: Recipe) -> None:
    """Optimizer types, schedules and clips (``optim`` and each ``optimizers.<name>``)."""
    if recipe.optim.lr_decay != "none" and recipe.optim.schedule is not None:
        raise ConfigError("optim.lr_decay and optim.schedule both set a schedule; keep optim.schedule "
                          "(optim.lr_decay: linear is optim.schedule: {type: linear, start: lr_decay_start})")
    resolve_type(recipe.optim.type, "optim")
    sections = [("optim", recipe.optim.schedule, recipe.optim.clip)]
    for name, o in recipe.optimizers.items():
        if o.type is not None:
            resolve_type(o.type, f"optimizers.{name}")
        sections.append((f"optimizers.{name}", o.schedule, o.clip))
    for where, schedule, clip in sections:
        if schedule is not None:
            validate_schedule(schedule, f"{where}.schedule", recipe.train.steps)
        if clip is not None and not (math.isfinite(clip) and clip > 0):
            raise ConfigError(f"{where}.clip is the largest gradient norm kept, a number > 0; got {clip} "
                              f"(leave it out for no clipping)")
