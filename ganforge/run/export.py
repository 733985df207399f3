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
    from ganforge.observe.files import atomic_folder

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
        "recipe": public_recipe(run.recipe, run.system, parts),
        "calls": _calls(run),
        "not_exported": {n: spec.kind for n, spec in run.system.networks.items() if n not in sampling},
    }
    if needs_dataset(run.recipe, get_plugin_manager().registry):  # (its data stays behind)
        config["data_facts"] = _scrubbed(data_facts(run.system.dataset))
    run_folder = run.checkpoint.parent.parent
    with atomic_folder(out) as tmp:
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(config, indent=1, default=str) + "\n")
        grid = run_folder / "samples-final.png"
        if grid.is_file():
            shutil.copyfile(grid, tmp / "samples.png")
        (tmp / "README.md").write_text(_model_card(config, _last_metrics(run_folder), grid.is_file(), out.name,
                                                   _usage(run.system, config)))
    return out


def public_recipe(recipe: Any, system: Any, parts: dict) -> dict:
    """The recipe as the run used it, for an export meant to be shared: without ``out_dir``,
    ``resume`` and ``data.root``, without the ``generator:`` / ``discriminator:`` sections no
    network was built from and ``train.z_dim`` when the system takes none, and with every other
    value that names a local file or folder left out (``None``)."""
    import inspect

    from ganforge.contract.manager import get_plugin_manager
    from ganforge.training.build import section_used

    out = recipe.to_dict()
    for key in ("out_dir", "resume"):
        out.pop(key, None)
    out["data"]["root"] = None
    for kind in ("generator", "discriminator"):
        if not section_used(recipe, system, kind):
            out.pop(kind, None)
    factory = get_plugin_manager().registry.get("objective", recipe.objective.name).factory
    if "z_dim" not in inspect.signature(factory).parameters and not any(
            "z_dim" in spec.context for spec in system.networks.values()):
        out["train"].pop("z_dim", None)
    return _scrubbed(out)


def _scrubbed(value: Any) -> Any:
    """``value`` with every string that names a local path (absolute, home-relative, relative
    with a separator, or an existing file or folder) replaced by ``None``."""
    import os

    if isinstance(value, dict):
        return {k: _scrubbed(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrubbed(v) for v in value]
    if isinstance(value, str) and (value.startswith(("/", "~", "./", "../")) or os.sep in value and (
            Path(value).exists() or Path(value).parent.exists()) or os.path.expanduser("~") in value):
        return None
    return value


def _calls(run: Any) -> dict[str, dict]:
    """How the system calls each network when it samples: the inputs' shapes (batch first) and
    dtypes and the output's, recorded on a batch of 2 (``{}`` for a network ``generate`` does not
    call, or when sampling needs data the run no longer has)."""
    calls: dict[str, dict] = {}

    def describe(x: Any) -> Any:
        if torch.is_tensor(x):
            return {"shape": list(x.shape[1:]), "dtype": str(x.dtype).removeprefix("torch.")}
        if isinstance(x, tuple) and hasattr(x, "_fields"):
            return {"returns": f"{type(x).__name__}({', '.join(x._fields)})"}
        if isinstance(x, (tuple, list)):
            return [describe(v) for v in x]
        return {"returns": type(x).__name__}

    def hook(name: str):
        def record(module, args, output):
            calls.setdefault(name, {"inputs": [describe(a) for a in args], "output": describe(output)})
        return record

    from ganforge.observe.sampling import sampling_mode

    handles = [m.register_forward_hook(hook(n)) for n, m in run.nets.items()]
    try:
        with torch.no_grad(), sampling_mode(run.system, run.nets):
            try:
                run.system.generate(run.nets, run.system.noise(2, "cpu", torch.Generator().manual_seed(0)))
            except Exception:  # noqa: BLE001 - sampling that needs the run's data, gone: no calls recorded
                calls.clear()
            for n, spec in run.system.networks.items():  # a network sampling does not call (an encoder),
                shape = spec.context.get("in_shape")  # on what its system says it takes
                if n in run.nets and n not in calls and spec.kind != "discriminator" and shape:
                    try:
                        run.nets[n](torch.zeros(2, *shape))
                    except Exception:  # noqa: BLE001 - it takes more than that: described without a call
                        calls.pop(n, None)
    finally:
        for h in handles:
            h.remove()
    return calls


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
    """The card's lines that use the model: what the system does with its networks alone, then
    each exported network called as the system calls it."""
    lines = []
    if callable(getattr(system, "vocode", None)):
        rate = config.get("data_facts", {}).get("sample_rate", "the run's")
        lines += [f"waveform = torch.zeros({rate})  # your speech: (T,) at {rate} Hz, in [-1, 1]",
                  "audio = run.vocode(waveform)  # its mel spectrogram -> the vocoder -> (T,)"]
    elif callable(getattr(system, "translate", None)) and getattr(system, "directions", None):
        shape = ", ".join(str(s) for s in config["data_facts"]["input_shape"])
        lines += [f"images = torch.zeros(4, {shape})  # your images: (N, {shape}) in [-1, 1]",
                  f"translated = run.translate(images, \"{next(iter(system.directions))}\")"]
    elif callable(getattr(system, "encode", None)) and callable(getattr(system, "decode", None)):
        shape = ", ".join(str(s) for s in config["sample_shape"])
        lines += [f"images = torch.zeros(4, {shape})  # your images: (N, {shape}) in [-1, 1]",
                  "codes = run.encode(images)  # code indices (N, h, w)",
                  "decoded = run.decode(codes)  # images again (N, " + shape + ")"]
    elif "data_facts" in config:  # (its samples are made from its data: held-out inputs)
        lines += ["# this system makes its samples from held-out data, which stays with the run (ganforge.load_run);",
                  "# its networks work on your own inputs:"]
    elif getattr(system, "num_classes", None):
        lines += ["samples = run.generate(16, seed=0)  # what `ganforge sample --seed 0` draws from the run",
                  "threes = run.generate(8, seed=0, labels=3)  # samples of class 3 (one label for all, or one each)"]
    else:
        lines += ["samples = run.generate(16, seed=0)  # what `ganforge sample --seed 0` draws from the run"]
    for name, net in config["networks"].items():
        call = config.get("calls", {}).get(name)
        if call and all(isinstance(i, dict) and "shape" in i for i in call["inputs"]):
            args = ", ".join(f"torch.zeros(4{''.join(f', {d}' for d in i['shape'])}"
                             + ("" if i["dtype"] == "float32" else f", dtype=torch.{i['dtype']}") + ")"
                             for i in call["inputs"])
            out = call["output"]
            gives = (f"(4, {', '.join(map(str, out['shape']))})" if isinstance(out, dict) and "shape" in out else
                     out.get("returns", "") if isinstance(out, dict) else "a tuple")
            lines.append(f"out = run.network(\"{name}\")({args})  # {net['kind']} {net['name']}: -> {gives}")
        else:
            lines.append(f"{name} = run.network(\"{name}\")  # {net['kind']} {net['name']} (not called when "
                         f"sampling; its inputs are the part's own)")
    return "\n".join(lines)


def _model_card(config: dict, metrics: dict, grid: bool, name: str, usage: str) -> str:
    nets = ", ".join(f"`{n}` ({c['kind']}: `{c['name']}`{', EMA' if c['ema'] else ''})"
                     for n, c in config["networks"].items())
    left = config.get("not_exported") or {}
    if left:
        nets += (". Not in this export: " + ", ".join(f"`{n}` ({k})" for n, k in left.items())
                 + ", used only in training (the run's checkpoints hold them)")
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
