"""The plain PyTorch loops ``ganforge bench`` compares the engine with: the bare eager loop
that does exactly the engine's work (the classic G(z)/D(x) step, or StyleGAN2's: style mixing,
``w_avg``, R1 and path length on w, lazily), and the MNIST loop as users write it."""
from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import torch

from ganforge.training.precision import AUTOCAST_DTYPES, resolve_precision
from ganforge.recipe.load import apply_overrides, recipe_from_dict
from ganforge.recipe.types import Recipe
from ganforge.recipe.ramps import initial

__all__ = ["eager_loop", "reference_loop"]


#: The systems the bare loop writes out: the classic step, and StyleGAN2's (unconditional).
BARE_STEPS = ("Unconditional", "StyleGAN2")


def _setup(recipe: Recipe, device: torch.device):
    """The recipe's dataset, system, G, D, penalties and optimizers, built by the engine's own
    code (so the same models, memory format and Adam implementation) for a system the bare loop
    writes out (:data:`BARE_STEPS`); also a description of what was built, for the table."""
    from accelerate.utils import set_seed

    from ganforge.training.build import build_networks, build_system, use_channels_last
    from ganforge.training.optim import make_optimizers
    from ganforge.errors import GanforgeError
    from ganforge.contract.manager import PluginManager

    registry = PluginManager().registry
    set_seed(recipe.seed)
    dataset = registry.build("dataset", recipe.data.name, recipe.data.args, root=recipe.data.root,
                             download=False)
    system = build_system(recipe, registry, tuple(dataset.sample_shape), dataset)
    if set(system.networks) != {"G", "D"}:
        raise GanforgeError(f"ganforge bench's bare loop is written for the two-network G/D systems; "
                            f"objective '{recipe.objective.name}' has networks {', '.join(system.networks)}")
    if type(system).__name__ not in BARE_STEPS or getattr(system, "num_classes", None):
        raise GanforgeError(f"ganforge bench's bare loop writes out the classic unconditional step (G(z) against "
                            f"D(x)) and StyleGAN2's; objective '{recipe.objective.name}' does other work per step, so "
                            f"the two would not compare: bench a recipe with objective unconditional or stylegan2 "
                            f"(unconditional)")
    nets = build_networks(recipe, registry, system)
    channels_last = use_channels_last(recipe.train.channels_last, nets, device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    nets = {n: m.to(device, memory_format=fmt) for n, m in nets.items()}
    o = recipe.optim
    fused = o.fused is True or (o.fused == "auto" and device.type == "cuda")
    opts = make_optimizers(recipe, system, nets, fused=fused, capturable=False)
    penalties = [(p, registry.build("penalty", p.name, p.args)) for p in recipe.penalties]
    adam = "fused" if fused else ("foreach" if device.type == "cuda" else "for-loop")
    work = f"Adam {adam}, penalties fp32, {'channels_last' if channels_last else 'contiguous'}"
    return dataset, system, nets["G"], nets["D"], penalties, opts["G"], opts["D"], work


def eager_loop(recipe: Recipe, device: torch.device, info: dict | None = None, cache: bool = True):
    """A bare PyTorch loop on the recipe's models: returns ``step()`` (one generator step).
    ``info["work"]`` receives a description of what it runs; ``cache``: autocast's weight-cast
    cache (torch's default, on)."""
    dataset, system, G, D, penalties, opt_g, opt_d, work = _setup(recipe, device)
    loss = system.loss
    data, normalize = getattr(dataset, "data", None), getattr(dataset, "normalize", None)
    if not isinstance(data, torch.Tensor):  # read from files: up to 2048 samples, decoded once
        items = [dataset[i] for i in range(min(len(dataset), 2048))]
        data = torch.stack([x[0] if isinstance(x, (tuple, list)) else x for x in items])
        normalize = None
    data = data.to(device)  # held on the device, normalised per batch like the engine
    n, b, z_dim, t = len(data), recipe.data.batch_size, recipe.train.z_dim, recipe.train
    precision = resolve_precision(t.precision, device.type, tuple(dataset.sample_shape))
    dtype = AUTOCAST_DTYPES.get(precision)
    if info is not None:
        info["cache"] = cache if dtype is not None else None
        info["work"] = f"{work}, autocast {precision}" + (f" (weight cache {'on' if cache else 'off'})" if dtype else "")
    d_steps = [0]
    ema = None
    if t.ema > 0:  # the engine's EMA, written out: the same work per step
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(G, multi_avg_fn=get_ema_multi_avg_fn(t.ema), use_buffers=True)

    def autocast():
        return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None, cache_enabled=cache)

    if type(system).__name__ == "StyleGAN2":
        return _stylegan2_step(G, D, loss, penalties, opt_g, opt_d, data, normalize, b, z_dim, system.style_mixing,
                               autocast, ema)

    def step():
        for _ in range(t.n_critic):
            real = data[torch.randint(n, (b,), device=device)]
            real = normalize(real) if normalize else real
            with autocast():
                with torch.no_grad():
                    fake = G(torch.randn(b, z_dim, device=device))
                loss_d = loss.d_loss(D(real), D(fake))
            d_steps[0] += 1
            for p, fn in penalties:
                if d_steps[0] % p.every == 0:
                    with torch.autocast(device.type, enabled=False):  # fp32, as the engine
                        loss_d = loss_d + initial(p.weight) * p.every * fn(D, real, fake)  # (same work)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
        D.requires_grad_(False)
        with autocast():
            loss_g = _g_loss(loss, D(G(torch.randn(b, z_dim, device=device))), D, real)
        _g_update(opt_g, loss_g, D, G, ema)

    return step


def _g_loss(loss, fake_logits, D, real):
    """G's loss; a relativistic loss also takes D's real logits (D frozen, no graph)."""
    if not getattr(loss, "uses_real_logits", False):
        return loss.g_loss(fake_logits)
    with torch.no_grad():
        real_logits = D(real)
    return loss.g_loss(fake_logits, real_logits)


def _g_update(opt_g, loss_g, D, G, ema) -> None:
    """G's optimizer step, D trainable again, the EMA."""
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    D.requires_grad_(True)
    if ema is not None:
        ema.update_parameters(G)


def _stylegan2_step(G, D, loss, penalties, opt_g, opt_d, data, normalize, b, z_dim, mixing, autocast, ema):
    """StyleGAN2's step written out (phases D then G, as the ``stylegan2`` system): each fake
    takes a second z's styles with probability ``mixing`` and moves ``w_avg``; R1 on D every
    ``every`` D steps, path length on w (G's synthesis, half the batch) every ``every`` G steps,
    both in fp32 and weighted ``weight * every``; EMA."""
    n, device = len(data), data.device
    d_pens = [(p, fn) for p, fn in penalties if getattr(fn, "network_kind", "discriminator") != "generator"]
    g_pens = [(p, fn) for p, fn in penalties if getattr(fn, "network_kind", "discriminator") == "generator"]
    steps = [0]

    def step():
        steps[0] += 1
        real = data[torch.randint(n, (b,), device=device)]
        real = normalize(real) if normalize else real
        z = torch.randn(b, z_dim, device=device)
        with autocast():
            with torch.no_grad():
                fake = G(z, mix=torch.randn_like(z) if mixing else None, mix_prob=mixing, update_w_avg=True)
            loss_d = loss.d_loss(D(real), D(fake))
        for p, fn in d_pens:
            if steps[0] % p.every == 0:
                with torch.autocast(device.type, enabled=False):  # fp32, as the engine
                    loss_d = loss_d + initial(p.weight) * p.every * fn(D, real, fake)
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        D.requires_grad_(False)
        z = torch.randn(b, z_dim, device=device)
        with autocast():
            fake, ws = G(z, mix=torch.randn_like(z) if mixing else None, mix_prob=mixing, update_w_avg=True,
                         return_ws=True)
            loss_g = _g_loss(loss, D(fake), D, real)
        for p, fn in g_pens:  # path length on w, through the synthesis network
            if steps[0] % p.every == 0:
                with torch.autocast(device.type, enabled=False):
                    loss_g = loss_g + initial(p.weight) * p.every * fn(lambda w: G(ws=w), None, ws)
        _g_update(opt_g, loss_g, D, G, ema)

    return step


def reference_loop(recipe: Recipe, device: torch.device, workdir: Path):
    """The MNIST loop as users write it (torchvision dataset + DataLoader, fp32, BCELoss)."""
    from torchvision import datasets, transforms

    from ganforge.contract.formats import find_idx_files

    # torchvision's MNIST reads uncompressed files under <root>/MNIST/raw: lay them out once
    raw = workdir / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    # (it checks that both the train and the test files are there)
    files = find_idx_files(Path(recipe.data.root), "MNIST", "train") + find_idx_files(Path(recipe.data.root), "MNIST", "test")
    for path in files:
        target = raw / path.name.removesuffix(".gz")
        with (gzip.open(path) if path.suffix == ".gz" else open(path, "rb")) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize([0.5], [0.5])])
    loader = torch.utils.data.DataLoader(datasets.MNIST(str(workdir), train=True, transform=tf),
                                         batch_size=recipe.data.batch_size, shuffle=True, num_workers=0)
    reference = recipe_from_dict(apply_overrides(recipe.to_dict(), ["optim.fused=false", "train.channels_last=false"]))
    _, _, G, D, _, opt_g, opt_d, _ = _setup(reference, device)  # as users write it: plain Adam
    criterion, z_dim = torch.nn.BCELoss(), recipe.train.z_dim
    it = iter(loader)

    def step():
        nonlocal it
        try:
            images, _ = next(it)
        except StopIteration:
            it = iter(loader)
            images, _ = next(it)
        real = images.to(device)
        b = real.size(0)  # labels sized from the batch: the seed's third bug, fixed
        ones, zeros = torch.ones(b, device=device), torch.zeros(b, device=device)
        fake = G(torch.randn(b, z_dim, device=device))
        loss_d = criterion(torch.sigmoid(D(real)), ones) + criterion(torch.sigmoid(D(fake.detach())), zeros)
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        loss_g = criterion(torch.sigmoid(D(fake)), ones)
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()

    return step
