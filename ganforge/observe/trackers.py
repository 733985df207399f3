"""Experiment trackers through Accelerate's tracker API (``log.trackers``).

``log.trackers: [tensorboard, wandb, mlflow, ...]`` becomes the Accelerator's ``log_with``;
every tracker gets the logged scalars (``train/...``, ``eval/...``), the resolved recipe as
hyper-parameters (flattened to dotted keys: ``train.steps``) and, where the tracker takes
images (TensorBoard, wandb, MLflow), the sample grids. ``log.wandb: true`` is short for adding
``wandb``. Files stay in the run folder: TensorBoard's event files under ``<out_dir>/tb``,
MLflow's file store under ``<out_dir>/mlruns`` (unless ``MLFLOW_TRACKING_URI`` is set), wandb's
offline run under ``<out_dir>/wandb`` (offline unless ``WANDB_API_KEY`` is set).
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from ganforge.errors import ConfigError

__all__ = ["KNOWN", "check_trackers", "init_trackers", "log_image", "tracker_names"]

# accelerate's trackers and the package each needs
KNOWN = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "aim": "aim", "comet_ml": "comet_ml",
         "clearml": "clearml", "dvclive": "dvclive", "swanlab": "swanlab", "trackio": "trackio"}


def tracker_names(cfg: Any) -> list[str]:
    """``log.trackers`` plus ``wandb`` when ``log.wandb`` is on, each once."""
    names = list(dict.fromkeys(cfg.log.trackers + (["wandb"] if cfg.log.wandb else [])))
    return names


def check_trackers(names: list[str]) -> None:
    """Known names whose packages are installed; otherwise one line saying which and how."""
    for name in names:
        if name not in KNOWN:
            raise ConfigError(f"log.trackers: unknown tracker '{name}'; Accelerate's trackers are "
                              f"{', '.join(KNOWN)}")
        if importlib.util.find_spec(KNOWN[name]) is None:
            raise ConfigError(f"log.trackers: '{name}' needs the {KNOWN[name]} package, which is not installed "
                              f"(pip install {KNOWN[name].replace('mlflow', 'mlflow-skinny')})")


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    """The recipe as dotted keys with values every tracker stores (lists and None as text)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{key}."))
        else:
            out[key] = v if isinstance(v, (bool, int, float, str)) else str(v)
    return out


def init_trackers(acc: Any, cfg: Any) -> None:
    """Start the recipe's trackers with the recipe as hyper-parameters, files in the run folder."""
    names = tracker_names(cfg)
    out = Path(cfg.output_dir).resolve()
    if "wandb" in names and not os.environ.get("WANDB_MODE") and not os.environ.get("WANDB_API_KEY"):
        os.environ["WANDB_MODE"] = "offline"
        acc.print("wandb: no WANDB_API_KEY, logging offline (upload later with `wandb sync`)")
    if "mlflow" in names and not os.environ.get("MLFLOW_TRACKING_URI"):
        import mlflow

        # a local file store in the run folder (MLflow 3 keeps it in maintenance mode and asks
        # for this opt-in; set MLFLOW_TRACKING_URI for a database or a server instead)
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        mlflow.set_tracking_uri((out / "mlruns").as_uri())
    acc.init_trackers(cfg.log.wandb_project if "wandb" in names else cfg.name, config=_flat(cfg.to_dict()),
                      init_kwargs={"wandb": {"name": cfg.name, "dir": str(out)}})


def log_image(acc: Any, path: Path, step: int) -> None:
    """A sample grid (a PNG) to every tracker that takes images."""
    for tracker in acc.trackers:
        if tracker.name == "wandb":
            import wandb

            tracker.log({"samples": wandb.Image(str(path))}, step=step)
        elif tracker.name in ("tensorboard", "mlflow"):
            import numpy as np
            from PIL import Image

            with Image.open(path) as img:
                array = np.asarray(img.convert("RGB"))
            if tracker.name == "tensorboard":
                tracker.writer.add_image("samples", array, global_step=step, dataformats="HWC")
            else:
                import mlflow

                mlflow.log_image(array, key="samples", step=step)
