"""``ganforge export RUN --out DIR``: a trained run's sampling networks in the Hugging Face Hub's
convention, to hand to someone without the run folder.

The folder holds ``model.safetensors`` (every network that is not a discriminator, EMA copies
where the run kept them; keys ``<network>.<parameter>``), ``config.json`` (the recipe, the
parts' names and arguments per network, the data shape, classes, the step, the ganforge
version; for a system that reads its dataset, a vocoder or a translation, the dataset's facts:
rate, hop, shapes, never the data) and a ``README.md`` model card (what it was trained on, the
recipe, the run's last measured metrics, a sample grid, the lines that load and use it).
:func:`load_pretrained` gives a :class:`ganforge.run.trained.Run` that samples exactly as the run does
for the same seed; ``--push REPO`` uploads the folder with ``huggingface_hub`` (which needs a
network and a token).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
import yaml

from ganforge.errors import GanforgeError

__all__ = ["export_run", "load_pretrained", "push"]

FORMAT = 1  # config.json's "ganforge_export" version


def export_run(run_path: str | Path, out: str | Path, *, ema: bool = True) -> Path:
    """Write the export folder ``out`` from a run folder (its newest checkpoint) or a checkpoint
    folder. Written under a temporary name, then renamed: nothing half-written."""
    from safetensors.torch import save_file

    from ganforge import __version__
    from ganforge.training import checkpoint as ckpt
    from ganforge.run.trained import load_run
    from ganforge.training.build import network_parts
    from ganforge.run.loading import data_facts, needs_dataset
    from ganforge.contract.manager import get_plugin_manager

    out = Path(out)
    if out.suffix.lower() in (".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".json", ".zip"):
        raise GanforgeError(f"--out {out} looks like a file name, but an export is a folder (model.safetensors, "
                            f"config.json, README.md): give a folder, e.g. --out {out.with_suffix('')}")
    if out.exists() and not out.is_dir():
        raise GanforgeError(f"--out {out} is a file; an export is a folder: choose a new folder")
    if out.exists() and any(out.iterdir()):
        raise GanforgeError(f"--out {out} exists and is not empty; choose a new folder")
    run = load_run(run_path, ema=ema)
    sampling = [n for n, spec in run.system.networks.items() if spec.kind != "discriminator"]
    parts = network_parts(run.recipe, run.system)
    tensors = {f"{n}.{k}": v.detach().cpu().contiguous() for n in sampling for k, v in run.nets[n].state_dict().items()}
    meta = json.loads((run.checkpoint / "meta.json").read_text())
    config = {
        "ganforge_export": FORMAT, "ganforge_version": __version__, "step": run.step,
        "objective": run.recipe.objective.name, "data": run.recipe.data.name,
        "sample_shape": meta["sample_shape"], "num_classes": meta.get("num_classes"), "z_dim": run.recipe.train.z_dim,
        "networks": {n: {"kind": run.system.networks[n].kind, "name": parts[n].name, "args": parts[n].args,
                         "ema": ema and f"{ckpt.stem(meta, f'ema.{n}')}.safetensors" in meta["files"]}
                     for n in sampling},
        "packages": _packages(run.recipe, run.system, {n: parts[n] for n in sampling}),
        "recipe": run.recipe.to_dict(),
    }
    if needs_dataset(run.recipe, get_plugin_manager().registry):  # (its data stays behind)
        config["data_facts"] = data_facts(run.system.dataset)
    run_folder = run.checkpoint.parent.parent
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(config, indent=1, default=str) + "\n")
        grid = run_folder / "samples-final.png"
        if grid.is_file():
            shutil.copyfile(grid, tmp / "samples.png")
        (tmp / "README.md").write_text(_model_card(config, _last_metrics(run_folder), grid.is_file(), out.name,
                                                   _usage(run.system, config)))
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise GanforgeError(f"cannot write {out}: {err.strerror or err}") from None
    return out


def _last_metrics(run_folder: Path) -> dict[str, float]:
    """The last evaluation the run logged (``eval/...`` in metrics.jsonl), if any."""
    path = run_folder / "metrics.jsonl"
    if not path.is_file():
        return {}
    last: dict[str, float] = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        evals = {k.removeprefix("eval/"): v for k, v in row.items() if k.startswith("eval/")}
        if evals:
            last = {"step": row.get("step"), **evals}
    return last


def _usage(system: Any, config: dict) -> str:
    """The card's line that uses the model: what the system does with its networks alone."""
    if callable(getattr(system, "vocode", None)):
        rate = config.get("data_facts", {}).get("sample_rate", "the run's")
        return (f"waveform = torch.zeros({rate})  # your speech: (T,) at {rate} Hz, in [-1, 1]\n"
                f"audio = run.vocode(waveform)  # its mel spectrogram -> the vocoder -> (T,)")
    if callable(getattr(system, "translate", None)) and getattr(system, "directions", None):
        shape = ", ".join(str(s) for s in config["data_facts"]["input_shape"])
        return (f"images = torch.zeros(4, {shape})  # your images: (N, {shape}) in [-1, 1]\n"
                f"translated = run.translate(images, \"{next(iter(system.directions))}\")")
    return "samples = run.generate(16, seed=0)  # what `ganforge sample --seed 0` draws from the run"


def _model_card(config: dict, metrics: dict, grid: bool, name: str, usage: str) -> str:
    nets = ", ".join(f"`{n}` ({c['kind']}: `{c['name']}`{', EMA' if c['ema'] else ''})"
                     for n, c in config["networks"].items())
    measured = "\n".join(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |"
                         for k, v in metrics.items()) if metrics else ""
    recipe = yaml.safe_dump(config["recipe"], sort_keys=False, default_flow_style=None).rstrip()
    return f"""---
library_name: ganforge
tags: [gan, ganforge, {config['objective']}]
---

# {config['recipe']['name']}: a ganforge {config['objective']} model

Trained with [ganforge](https://pypi.org/project/ganforge/) {config['ganforge_version']} for
{config['step']} steps on `{config['data']}` (samples of shape {config['sample_shape']}{
    f", {config['num_classes']} classes" if config['num_classes'] else ""}). Networks: {nets}.

```python
import ganforge
import torch
run = ganforge.load_pretrained("{name}")  # this folder
{usage}
```
{f'''
![samples](samples.png)
''' if grid else ''}
## Measured (the run's last evaluation)

{f'''| metric | value |
|---|---|
{measured}''' if measured else 'The run logged no evaluation.'}

## Recipe

```yaml
{recipe}
```
"""


def _packages(recipe: Any, system: Any, parts: dict) -> dict[str, str]:
    """The distribution that registered each part the export needs (the objective and every
    network's), so that loading it where a plugin is missing can say what to install."""
    from ganforge.contract.manager import get_plugin_manager

    registry = get_plugin_manager().registry
    wanted = [("objective", recipe.objective.name)] + [(system.networks[n].registry_kind, parts[n].name)
                                                       for n in parts]
    out = {}
    for kind, name in wanted:
        try:
            plugin = registry.get(kind, name).plugin
        except (KeyError, ValueError):
            continue
        if plugin.distribution:
            out[f"{kind}:{name}"] = plugin.distribution
    return out


def _local_folder(source: Any, download: bool) -> Path:
    """An export folder for ``source``: a local path, or a Hub repository id (``owner/name``)
    fetched with huggingface_hub when ``download`` allows it (nothing is downloaded otherwise)."""
    if not isinstance(source, (str, Path)):
        raise GanforgeError(f"load_pretrained takes an export folder's path or a Hub repository id (owner/name), "
                            f"got {type(source).__name__} {source!r}")
    folder = Path(source)
    if folder.exists() or not isinstance(source, str) or source.count("/") != 1 or source.startswith((".", "/")):
        return folder
    if not download:
        raise GanforgeError(f"{source} is not a folder here; to fetch the Hub repository {source}, pass "
                            f"download=True (load_pretrained({source!r}, download=True))")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=source, repo_type="model"))
    except Exception as err:  # noqa: BLE001 - the Hub's errors: no network, no such repository, no access
        raise GanforgeError(f"cannot fetch the Hub repository {source}: {type(err).__name__}: "
                            f"{str(err).splitlines()[0] if str(err) else ''}") from None


def load_pretrained(folder: str | Path, *, device: str | torch.device = "cpu", download: bool = False) -> Any:
    """An export folder (``ganforge export``), or with ``download=True`` a Hub repository id
    holding one, as a :class:`ganforge.run.trained.Run` holding its sampling networks, in eval
    mode on ``device``. config.json is checked before anything is allocated: its format, the
    parts it names (with the package that provides a missing one) and, on the meta device, the
    shapes it describes against the weights."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    from ganforge.contract.manager import get_plugin_manager
    from ganforge.errors import UnknownNameError
    from ganforge.recipe.load import recipe_from_dict
    from ganforge.run.loading import ExportedData, check_on_meta, dataset_of, meta_fields, needs_dataset
    from ganforge.run.trained import Run
    from ganforge.training.build import build_networks, build_system

    folder = _local_folder(folder, download)
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise GanforgeError(f"{folder} is not a ganforge export (config.json and model.safetensors); "
                            f"write one with: ganforge export RUN --out {folder}")
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise GanforgeError(f"{folder / 'config.json'} is not readable JSON ({err}); export the run again") from None
    if not isinstance(config, dict) or config.get("ganforge_export") != FORMAT:
        raise GanforgeError(f"{folder / 'config.json'} is export format "
                            f"{config.get('ganforge_export') if isinstance(config, dict) else None!r}; this "
                            f"ganforge reads format {FORMAT}")
    missing = [k for k in ("recipe", "networks", "sample_shape", "step") if k not in config]
    if missing:
        raise GanforgeError(f"{folder / 'config.json'} lacks {', '.join(missing)}; the file is damaged or was edited")
    recipe = recipe_from_dict(config["recipe"])
    registry = get_plugin_manager().registry
    shape, classes = meta_fields(config, folder)
    try:
        dataset = None
        if needs_dataset(recipe, registry):  # the facts the system reads, not the data (which stays with the run)
            dataset = (ExportedData(config["data_facts"], recipe.objective.name) if "data_facts" in config
                       else dataset_of(recipe, registry))
        try:  # the shapes alone (the header), as meta tensors
            with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
                stored = {k: torch.empty(f.get_slice(k).get_shape(), device="meta") for k in f.keys()}
        except (SafetensorError, OSError) as err:
            raise GanforgeError(f"{folder / 'model.safetensors'} is not a readable safetensors file ({err})") from None
        shapes = {n: {k[len(n) + 1:]: v for k, v in stored.items() if k.startswith(f"{n}.")}
                  for n in config["networks"]}
        check_on_meta(recipe, registry, shape, classes, dataset, shapes, folder / "config.json")
        system = build_system(recipe, registry, shape, dataset, num_classes=classes)
        nets = build_networks(recipe, registry, system)
    except UnknownNameError as err:
        needed = {k.partition(":")[2]: v for k, v in (config.get("packages") or {}).items()}
        hint = next((f" It was made with part(s) from the package {pkg}: pip install {pkg}"
                     for name, pkg in needed.items() if f"'{name}'" in str(err)), "")
        raise GanforgeError(f"{folder / 'config.json'}: {err}{hint}") from None
    tensors = load_file(str(folder / "model.safetensors"))
    for name in config["networks"]:
        prefix = f"{name}."
        nets[name].load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    device = torch.device(device)
    for module in nets.values():
        module.eval().to(device)
    system.setup(nets)
    sampling = {n: nets[n] for n in config["networks"]}
    return Run(recipe, system, sampling, int(config["step"]), folder, device)


def push(folder: Path, repo: str) -> str:
    """Upload an export folder to the Hub repository ``repo`` (a model repository, created if
    missing); returns its URL. Needs a network and a token (``huggingface-cli login``)."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo, repo_type="model", exist_ok=True)
    info = api.upload_folder(folder_path=str(folder), repo_id=repo, repo_type="model",
                             commit_message="ganforge export")
    return str(getattr(info, "commit_url", info))
