"""Checkpoints without pickle: safetensors for tensors, JSON for everything else.

A checkpoint is a folder ``<out_dir>/checkpoints/step-00001000/`` (format 2), with the
system's networks and optimizers by name::

    model.G.safetensors  model.D.safetensors ...   every network's weights
    ema.G.safetensors ...                          EMA copies (networks that keep one)
    optim.G.safetensors  optim.D.safetensors ...   tensors of the optimizer states
    system-rank0.safetensors ...                   the system's persistent state, per rank (if any)
    rng-rank0.safetensors ...                      torch/CUDA/NumPy RNG state per rank
    meta.json                                      step, phase counts, data position, recipe,
                                                   plugin versions, non-tensor state, file sizes
                                                   and SHA-256 hashes (checked on load)

Format 1 (ganforge 0.1.0: ``generator``, ``discriminator``, ``generator_ema``,
``optimizer_g``, ``optimizer_d``) is read as networks ``G`` and ``D``.

It is written into a hidden temporary folder, flushed, then renamed into place, so a crash
mid-write leaves the previous checkpoint intact; ``meta.json`` is written last and lists
every file with its size, so a truncated or incomplete folder is recognised. Loading never
unpickles anything.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ganforge.errors import CheckpointError

FORMAT_VERSION = 2
#: format-1 file stems by their format-2 names
_V1_STEMS = {"model.G": "generator", "model.D": "discriminator", "ema.G": "generator_ema",
             "optim.G": "optimizer_g", "optim.D": "optimizer_d"}
PREFIX = "step-"


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))
    _fsync_file(path)


def model_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """State dict with shared tensors cloned (safetensors refuses aliased storage)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# ------------------------------------------------------------------------- optimizer state
def split_optimizer_state(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    rest: dict[str, Any] = {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{key}"] = value
            else:
                rest.setdefault(str(pid), {})[key] = value
    # a learning rate held as a tensor (the fast path's decaying rate) is saved as its value
    groups = [{k: v.item() if torch.is_tensor(v) else v for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "state": rest}


def join_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    for pid, values in meta["state"].items():
        state.setdefault(int(pid), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


# ------------------------------------------------------------------------------- RNG state
def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors["numpy"] = torch.from_numpy(keys.astype(np.int64))
    meta = {"python": _to_json(random.getstate()), "numpy": [kind, int(pos), int(has_gauss), float(gauss)]}
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    kind, pos, has_gauss, gauss = meta["numpy"]
    np.random.set_state((kind, tensors["numpy"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(_from_json(meta["python"]))


def _to_json(x: Any) -> Any:
    return [_to_json(v) for v in x] if isinstance(x, (tuple, list)) else x


def _from_json(x: Any) -> Any:
    return tuple(_from_json(v) for v in x) if isinstance(x, list) else x


# ------------------------------------------------------------------------------ save/load
def write_checkpoint(final: Path, tensors: dict[str, dict[str, torch.Tensor]],
                     meta: dict[str, Any], pause_hook: Any = None) -> Path:
    """Write ``{file stem: tensors}`` and ``meta`` atomically into folder ``final``."""
    final = Path(final)
    tmp = final.parent / f".tmp-{final.name}"
    try:
        return _write(final, tmp, tensors, meta, pause_hook)
    except OSError as err:  # disk full, read-only, permissions: the previous checkpoints are intact
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"could not write checkpoint {final} ({err.strerror or err}); the previous "
                              f"checkpoints are intact. Free space or choose another out_dir") from None


def _write(final: Path, tmp: Path, tensors: dict[str, dict[str, torch.Tensor]], meta: dict[str, Any],
           pause_hook: Any) -> Path:
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    files, hashes = {}, {}
    for stem, group in tensors.items():
        path = tmp / f"{stem}.safetensors"
        _save_tensors(group, path)
        files[path.name] = path.stat().st_size
        hashes[path.name] = _sha256(path)
    if pause_hook is not None:  # tests: a chance to kill the process mid-write
        pause_hook(tmp)
    meta = dict(meta, format=FORMAT_VERSION, files=files, sha256=hashes)
    with open(tmp / "meta.json", "w") as f:
        json.dump(meta, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    if final.exists():  # re-saving a step: the old copy stays whole until the new one is in place
        old = final.parent / f".old-{final.name}"
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return final


def read_meta(folder: Path) -> dict[str, Any]:
    """Read and check a checkpoint's meta.json and file sizes; CheckpointError if invalid."""
    folder = Path(folder)
    meta_path = folder / "meta.json"
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint {folder} does not exist (or is not a folder)")
    if meta_path.is_symlink():
        raise CheckpointError(f"{meta_path} is a symbolic link; a checkpoint holds its own files")
    if not meta_path.is_file():
        if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
            raise CheckpointError(f"{folder} is a ganforge export (config.json, model.safetensors), not a run or a "
                                  f"checkpoint: load it with ganforge.load_pretrained({str(folder)!r}) and sample "
                                  f"from Python (.generate(n)), or give the run folder it was exported from")
        if not any(folder.glob("*.safetensors")):
            raise CheckpointError(f"{folder} is not a checkpoint (no meta.json, no weights) nor a run folder "
                                  f"(no checkpoints/ inside): give a run's out_dir or one of its "
                                  f"checkpoints/step-* folders")
        raise CheckpointError(f"checkpoint {folder} has no meta.json: it is incomplete")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{meta_path} is corrupted ({err})") from None
    files = meta.get("files") if isinstance(meta, dict) else None
    if not isinstance(files, dict) or not isinstance(meta.get("step"), int) or not all(
            isinstance(k, str) and isinstance(v, int) for k, v in files.items()):
        raise CheckpointError(f"{meta_path} is malformed: it needs 'step' (a number) and 'files' "
                              f"(file name -> size); the checkpoint cannot be used")
    version = meta.get("format", 1)
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= FORMAT_VERSION:
        raise CheckpointError(f"{meta_path} says checkpoint format {version!r}; this ganforge reads formats 1 to "
                              f"{FORMAT_VERSION}: a newer ganforge wrote it (upgrade ganforge), or the file was edited")
    hashes = meta.get("sha256") or {}
    for name, size in files.items():
        path = folder / name
        if Path(name).name != name or name in ("", ".", ".."):
            raise CheckpointError(f"{meta_path} names a file outside its folder ({name!r}); refusing it")
        if path.is_symlink():  # it would read whatever the link points to, anywhere
            raise CheckpointError(f"checkpoint file {path} is a symbolic link (to {os.readlink(path)}); a checkpoint "
                                  f"holds its own files: copy the file in place of the link")
        if not path.is_file():
            raise CheckpointError(f"checkpoint file {path} is missing")
        if path.stat().st_size != size:
            raise CheckpointError(
                f"checkpoint file {path} has {path.stat().st_size} bytes, expected {size}: "
                f"it is truncated or damaged"
            )
        if name in hashes and _sha256(path) != hashes[name]:
            raise CheckpointError(f"checkpoint file {path} does not match its SHA-256 in meta.json: "
                                  f"it is damaged")
    return meta


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file; CheckpointError naming the file if it is damaged."""
    if not Path(path).is_file():
        raise CheckpointError(f"checkpoint file {path} is missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"checkpoint file {path} is corrupted ({err})") from None


def list_checkpoints(ckpt_dir: Path) -> list[Path]:
    """Checkpoint folders, oldest first (temporary folders excluded). A step whose re-save was
    cut off between its two renames is put back from its ``.old-`` copy first."""
    if not ckpt_dir.is_dir():
        return []
    for old in ckpt_dir.glob(f".old-{PREFIX}*"):
        final = ckpt_dir / old.name.removeprefix(".old-")
        if not final.exists():
            os.replace(old, final)
    return sorted(p for p in ckpt_dir.iterdir() if p.is_dir() and p.name.startswith(PREFIX))


def rotate(ckpt_dir: Path, keep: int) -> None:
    for old in list_checkpoints(ckpt_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def set_aside_after(ckpt_dir: Path, step: int) -> list[Path]:
    """After resuming at ``step``, the checkpoints of this folder with a later step belong to the
    branch that was abandoned: rename them ``abandoned-step-...`` (kept, never chosen by
    ``resume=auto``, never rotated away) so that the resumed run's checkpoints are the newest."""
    moved = []
    for folder in list_checkpoints(ckpt_dir):
        if int(folder.name.removeprefix(PREFIX)) > step:
            target = ckpt_dir / f"abandoned-{folder.name}"
            n = 1
            while target.exists():  # abandoned twice: keep both
                target, n = ckpt_dir / f"abandoned-{folder.name}-{n}", n + 1
            os.replace(folder, target)
            moved.append(target)
    return moved


def latest_valid(ckpt_dir: Path, log: Any = print) -> Path | None:
    """The newest checkpoint that passes :func:`read_meta`; invalid newer ones are logged."""
    for folder in reversed(list_checkpoints(ckpt_dir)):
        try:
            for name in read_meta(folder)["files"]:
                load_tensors(folder / name)
            return folder
        except CheckpointError as err:
            log(f"skipping invalid checkpoint: {err}")
    return None


def stem(meta: dict[str, Any], name: str) -> str:
    """The file stem of ``name`` (``model.G``, ``optim.D``, ...) in a checkpoint of ``meta``'s format."""
    return _V1_STEMS.get(name, name) if meta.get("format", 1) == 1 else name


def upgrade_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """Format-1 meta in format-2 terms (networks G and D, phases D and G)."""
    if meta.get("format", 1) >= 2:
        return meta
    meta = dict(meta)
    meta["networks"] = {"G": "generator", "D": "discriminator"}
    meta["phase_steps"] = {"D": meta.get("d_steps", 0), "G": meta["step"]}
    meta["optimizers"] = {"G": meta["optimizer_g"], "D": meta["optimizer_d"]}
    n = meta.get("ema_n_averaged")
    meta["ema_n_averaged"] = {"G": n} if n is not None else {}
    return meta


def load_network_weights(folder: Path, ema: bool = True) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
    """Every network's weights (its EMA copy where there is one and ``ema``) and the
    (upgraded) meta, for sampling and evaluation."""
    meta = read_meta(folder)
    files = meta["files"]
    meta = upgrade_meta(meta)
    weights = {}
    for name in meta["networks"]:
        use = f"ema.{name}" if ema and f"{stem(meta, f'ema.{name}')}.safetensors" in files else f"model.{name}"
        weights[name] = load_tensors(Path(folder) / f"{stem(meta, use)}.safetensors")
    return weights, meta
