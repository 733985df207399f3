"""Loading a trained run for sampling, evaluation and translation: a checkpoint (or a run
folder's newest) becomes the system of its recipe with the weights loaded (EMA copies where
kept), in eval mode on the CPU. ``meta.json`` is outside the checksums, so what it says about
the networks (sample shape, classes) is checked against the weights before anything is built
for real."""
from __future__ import annotations

from pathlib import Path

from ganforge.errors import GanforgeError

__all__ = ["ExportedData", "check_on_meta", "data_facts", "dataset_of", "input_images", "load_for_sampling", "meta_fields",
           "needs_dataset"]


def load_for_sampling(checkpoint: str, ema: bool):
    """The system of a checkpoint's recipe with its networks' weights (EMA copies where kept),
    in eval mode on the CPU: ``(nets, system, recipe, meta)``; ``meta["folder"]`` is the
    checkpoint folder used (for a run folder: its newest valid checkpoint)."""
    from ganforge.training import checkpoint as ckpt
    from ganforge.training.build import build_networks, build_system
    from ganforge.recipe.load import recipe_from_dict
    from ganforge.contract.manager import get_plugin_manager

    folder = Path(checkpoint)
    if folder.is_dir() and not (folder / "meta.json").exists() and (folder / "checkpoints").is_dir():
        latest = ckpt.latest_valid(folder / "checkpoints")  # a run folder: take its newest
        if latest is None:
            raise GanforgeError(f"no valid checkpoint in {folder / 'checkpoints'}")
        folder = latest
    weights, meta = ckpt.load_network_weights(folder, ema=ema)
    recipe = recipe_from_dict(meta["recipe"])
    registry = get_plugin_manager().registry
    dataset = dataset_of(recipe, registry) if needs_dataset(recipe, registry) else None
    shape, classes = meta_fields(meta, folder)
    # meta.json is outside the checksums: the networks it describes are first built on the
    # meta device (no memory) and their shapes compared with the weights, so a crafted shape
    # or class count is refused before anything is allocated
    check_on_meta(recipe, registry, shape, classes, dataset, weights, folder / "meta.json")
    system = build_system(recipe, registry, shape, dataset, num_classes=classes)
    nets = build_networks(recipe, registry, system)
    for name, module in nets.items():
        module.load_state_dict(weights[name])
        module.eval()
    system.setup(nets)
    meta = {**meta, "folder": str(folder)}  # the checkpoint used (a run folder's newest)
    return nets, system, recipe, meta


def check_on_meta(recipe, registry, shape: tuple[int, ...], classes: int | None, dataset, weights: dict,
                  described_by: Path) -> None:
    """Build the networks ``described_by`` describes on the meta device (no memory) and compare
    their parameter shapes with ``weights`` ({network: {key: tensor}}, only those present are
    compared): a crafted or mismatched description is one line, before anything is allocated."""
    import torch

    from ganforge.training.build import build_networks, build_system

    try:
        with torch.device("meta"):
            shells = build_networks(recipe, registry, build_system(recipe, registry, shape, dataset,
                                                                   num_classes=classes), check=False)
    except (RuntimeError, NotImplementedError):  # a plugin network that cannot be built without memory
        shells = {}
    for name, module in shells.items():
        if name not in weights:
            continue
        expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        got = {k: tuple(v.shape) for k, v in weights[name].items()}
        wrong = sorted(k for k in expected.keys() & got.keys() if expected[k] != got[k])
        if expected.keys() != got.keys() or wrong:
            detail = (f"{name}.{wrong[0]} is {list(got[wrong[0]])} in the weights but {list(expected[wrong[0]])} "
                      f"for that shape" if wrong else f"network {name}'s parameters differ from the weights'")
            raise GanforgeError(f"{described_by} does not match the weights (sample_shape {list(shape)}, "
                                f"num_classes {classes}): {detail}; the file was edited or belongs to another run")


def meta_fields(meta: dict, folder: Path) -> tuple[tuple[int, ...], int | None]:
    """``sample_shape`` and ``num_classes`` from a checkpoint's meta.json, type-checked."""
    shape, classes = meta.get("sample_shape"), meta.get("num_classes")
    if not (isinstance(shape, list) and 1 <= len(shape) <= 4 and
            all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape)):
        raise GanforgeError(f"{folder / 'meta.json'}: sample_shape must be a list of 1 to 4 positive "
                            f"integers, got {shape!r}; the file is damaged or was edited")
    if classes is not None and (not isinstance(classes, int) or isinstance(classes, bool) or classes < 1):
        raise GanforgeError(f"{folder / 'meta.json'}: num_classes must be a positive integer or null, got "
                            f"{classes!r}; the file is damaged or was edited")
    return tuple(shape), classes


def needs_dataset(recipe, registry) -> bool:
    """An objective whose factory requires ``dataset`` (no default: the image-to-image systems,
    whose inputs are the data's images) gets it for sampling and evaluation too."""
    import inspect

    factory = registry.get("objective", recipe.objective.name).factory
    param = inspect.signature(factory).parameters.get("dataset")
    return param is not None and param.default is inspect.Parameter.empty


def data_facts(dataset) -> dict:
    """What a system may read from its dataset beside the data itself: the dataset's public
    plain values (numbers, flags, names, shapes: a vocoder's ``sample_rate`` and ``hop``, a
    translation's ``input_shape`` and ``paired``), for an export to carry instead of the data."""
    facts = {}
    for name in dir(dataset):
        if name.startswith("_") or name == "root":
            continue
        value = getattr(dataset, name, None)
        if isinstance(value, (bool, int, float, str)) or (
                isinstance(value, (tuple, list)) and all(isinstance(v, int) for v in value)):
            facts[name] = list(value) if isinstance(value, (tuple, list)) else value
    return facts


class ExportedData:
    """An export's stand-in for the dataset of a system that needs one (:func:`needs_dataset`):
    the facts :func:`data_facts` recorded, and no data. The networks' own uses (a vocoder's
    ``vocode``, a translation's ``translate``) work; held-out inputs (``generate``) need the run."""

    def __init__(self, facts: dict, objective: str):
        self.__dict__.update({k: tuple(v) if isinstance(v, list) else v for k, v in facts.items()})
        self._objective = objective

    def _none(self, *args, **kwargs):
        raise GanforgeError(f"an export holds the networks, not the data: the {self._objective} run's held-out "
                            f"inputs need its data; load the run itself (ganforge.load_run) with its data.root")

    evaluation = __getitem__ = __getitems__ = _none

    def __len__(self) -> int:
        return 0


def dataset_of(recipe, registry):
    return registry.build("dataset", recipe.data.name, recipe.data.args, root=recipe.data.root, download=False)


def input_images(folder: Path, shape, direction):
    """Images under ``folder`` as the generator's input (resized to its size); pix2pix A|B
    files (twice as wide as high, from a paired_folder run) give their input half."""
    import torch
    from torchvision.transforms.v2 import functional as TF

    from ganforge.contract.formats import IMAGE_EXTENSIONS, image_files, open_image

    if not folder.is_dir():
        raise GanforgeError(f"--input {folder} is not a folder of images")
    files = image_files(folder)
    if not files:
        raise GanforgeError(f"no images in --input {folder} (looked for {', '.join(IMAGE_EXTENSIONS)})")
    mode, size, images = ("L" if shape[0] == 1 else "RGB"), shape[1], []
    for path in files:
        img = open_image(path, mode)  # an unreadable file: one line naming it
        w, h = img.size
        if direction is not None and w == 2 * h:  # an A|B pair: the half the run translates from
            img = img.crop((0, 0, h, h)) if direction == "AtoB" else img.crop((h, 0, w, h))
        x = TF.to_dtype(TF.to_image(TF.resize(img, [size, size])), torch.float32, scale=True)
        images.append(x.mul(2).sub(1))
    names = [str(p.relative_to(folder).with_suffix("")) for p in files]
    return names, torch.stack(images)
