"""The commands that use a trained run: ``ganforge sample`` (with the latent controls
``--truncation`` and ``--mix``), ``directions``, ``project``, ``translate`` and ``vocode``
(their arguments are defined in :mod:`ganforge.cli`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ganforge.errors import GanforgeError
from ganforge.run.loading import input_images, load_for_sampling as _load_for_sampling

__all__ = ["cmd_directions", "cmd_project", "cmd_sample", "cmd_translate", "cmd_vocode"]


def _requested_labels(label: str | None, n: int, system, objective: str) -> tuple[object, int | None]:
    """``--label``: None, one class for all ``n`` samples, or ``all`` (each class in turn,
    one grid row per class); returns the labels tensor and the grid's row length."""
    import torch

    if label is None:
        return None, None
    classes = getattr(system, "num_classes", None)
    if not classes:
        raise GanforgeError(f"--label needs a class-conditional run (objective=conditional or acgan); "
                            f"this run's objective is '{objective}'")
    if label == "all":
        per_class = -(-n // classes)
        return torch.arange(classes).repeat_interleave(per_class)[:n], per_class
    if not label.lstrip("-").isdigit() or not 0 <= int(label) < classes:
        raise GanforgeError(f"--label {label} is out of range: this run has {classes} classes "
                            f"(0 to {classes - 1}), or use --label all")
    return torch.full((n,), int(label)), None


def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    nets, system, recipe, meta = _load_for_sampling(args.checkpoint, not args.no_ema)
    out = Path(args.out)
    if out.suffix not in (".png", ".safetensors", ".npz"):
        raise GanforgeError(f"--out must end in .png, .safetensors or .npz, got '{out.name}'")
    if args.n < 1:
        raise GanforgeError(f"--n must be at least 1, got {args.n}")
    from ganforge.run.trained import sampling_controls, w_space

    controls = sampling_controls(system, recipe.objective.name, args.truncation)
    if args.mix:  # a style-mixing figure (runs with a W space)
        if out.suffix != ".png":
            raise GanforgeError("--mix writes a picture: give --out FILE.png")
        grid = w_space(system, recipe.objective.name, "mixing_grid")
        if args.label is not None and not str(args.label).isdigit():
            raise GanforgeError(f"--mix takes one class index as --label, got '{args.label}'")
        from ganforge.observe import plots
        from ganforge.observe.sampling import sampling_mode

        with torch.no_grad(), sampling_mode(system, nets):
            images, nrow = grid(nets, args.n if args.n_given else 4, args.seed,
                                int(args.label) if args.label is not None else None)
        out.parent.mkdir(parents=True, exist_ok=True)
        plots.save_grid(images.float().cpu(), out, nrow)
        print(f"wrote a style-mixing grid ({nrow - 1} x {nrow - 1} sources, coarse / middle / fine) to {out}")
        return 0
    gen = torch.Generator().manual_seed(args.seed)
    labels, nrow = _requested_labels(args.label, args.n, system, recipe.objective.name)
    # a picture is arranged as the system likes (InfoGAN: one code per column; conditional:
    # one row per class); saved samples are independent draws, fit for metrics elsewhere
    picture = out.suffix == ".png"
    if args.interpolate is not None:  # latent walks: a row per walk (and class)
        from ganforge.observe.walks import latent_walks
        if not picture:
            raise GanforgeError("--interpolate writes a picture: give --out FILE.png")
        noise, nrow = latent_walks(system, args.n if args.n_given else 8, args.interpolate, gen)
    elif picture and labels is None:
        noise = system.grid_noise(args.n, "cpu", gen)
        nrow = system.grid_nrow
    else:
        noise = system.noise(args.n, "cpu", gen, **({"labels": labels} if labels is not None else {}))
    total = len(noise[0]) if isinstance(noise, (tuple, list)) else len(noise)
    from ganforge.observe.sampling import rows, sampling_mode

    with torch.no_grad(), sampling_mode(system, nets):
        samples = torch.cat([system.generate(nets, rows(noise, i, i + 1024), **controls).float()
                             for i in range(0, total, 1024)])
    asked = system.labels_of(noise)
    out.parent.mkdir(parents=True, exist_ok=True)
    if picture:
        from ganforge.observe import plots

        written = system.write_samples(samples, noise, out)  # (the system's own form: a vocoder's wavs)
        if written is None and samples.dim() == 2:  # (no data points: the run's data is not loaded for sampling)
            plots.save_scatter(samples, None, out, f"{recipe.name}: step {meta['step']}")
        elif written is None:
            plots.save_grid(samples, out, nrow)
    else:  # (a conditional run: with the class each sample was made for)
        from ganforge.observe.sampling import write_sample_file

        write_sample_file(out, samples, asked)
    print(f"wrote {len(samples)} samples of shape {tuple(samples.shape[1:])} to {out}"
          + (" with their labels" if asked is not None and not picture else ""))
    return 0


def cmd_directions(args: argparse.Namespace) -> int:
    """``ganforge directions RUN --out FILE.png``: SeFa's semantic directions as an edit grid."""
    import torch

    from ganforge.observe import plots
    from ganforge.observe.sampling import sampling_mode
    from ganforge.run.trained import w_space

    nets, system, recipe, _ = _load_for_sampling(args.checkpoint, not args.no_ema)
    out = Path(args.out)
    if out.suffix != ".png":
        raise GanforgeError(f"--out is a picture: give FILE.png, got '{out.name}'")
    grid = w_space(system, recipe.objective.name, "direction_grid")
    if args.steps < 2 or args.span <= 0:
        raise GanforgeError(f"--steps must be >= 2 and --span > 0, got {args.steps} and {args.span}")
    with torch.no_grad(), sampling_mode(system, nets):
        images, nrow = grid(nets, args.k, args.steps, args.span, args.seed, args.label)
    out.parent.mkdir(parents=True, exist_ok=True)
    plots.save_grid(images.float().cpu(), out, nrow)
    print(f"wrote {args.k} directions x {args.steps} steps (-{args.span:g} to +{args.span:g} sigma) to {out}")
    return 0


def cmd_project(args: argparse.Namespace) -> int:
    """``ganforge project RUN --image FILE|FOLDER --out DIR``: each image inverted into the run's
    W (or W+ with --w-plus): DIR/NAME.safetensors (its ws), NAME.png (the image | its
    reconstruction) and NAME.gif (the optimisation). Every image is checked before any is
    projected, and the files are written under a temporary folder renamed at the end."""
    import torch
    from PIL import Image
    from safetensors.torch import save_file

    from ganforge.observe import plots
    from ganforge.observe.animate import write_gif
    from ganforge.observe.files import atomic_folder
    from ganforge.observe.sampling import sampling_mode
    from ganforge.contract.formats import IMAGE_EXTENSIONS, image_files
    from ganforge.run.trained import w_space

    nets, system, recipe, meta = _load_for_sampling(args.checkpoint, not args.no_ema)
    project = w_space(system, recipe.objective.name, "project")
    source, out = Path(args.image), Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise GanforgeError(f"--out {out} exists and is not an empty folder; choose a new folder")
    files = [source] if source.is_file() else image_files(source) if source.is_dir() else []
    if not files:
        raise GanforgeError(f"--image {source}: no image there (a file or a folder of {', '.join(IMAGE_EXTENSIONS)})")
    shape = tuple(meta["sample_shape"])
    images = []
    for path in files:  # all checked first: one line for the first that does not fit
        try:
            picture = Image.open(path)
            picture.load()
        except OSError as err:
            raise GanforgeError(f"--image {path} cannot be read as an image: {err}") from None
        channels = {"L": 1, "RGB": 3}.get(picture.mode)
        if picture.size != (shape[2], shape[1]) or channels != shape[0]:
            raise GanforgeError(f"--image {path} is {picture.size[0]}x{picture.size[1]} {picture.mode}, but this run "
                                f"makes {shape[2]}x{shape[1]} {'L (grey)' if shape[0] == 1 else 'RGB'} images; "
                                f"resize or convert it first")
        x = torch.frombuffer(bytearray(picture.tobytes()), dtype=torch.uint8).reshape(shape[1], shape[2], shape[0])
        images.append(x.permute(2, 0, 1).float() / 127.5 - 1.0)
    with sampling_mode(system, nets):
        ws, recon, film, distances = project(nets, torch.stack(images), args.steps, args.w_plus, args.distance,
                                             args.label, args.seed)
    with atomic_folder(out) as tmp:
        for i, path in enumerate(files):
            name = path.relative_to(source).with_suffix("") if source.is_dir() else Path(path.stem)  # (a/1, b/1 apart)
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            save_file({"ws": ws[i].float().cpu().contiguous()}, str(tmp / f"{name}.safetensors"),
                      metadata={"space": "W+" if args.w_plus else "W", "distance": args.distance,
                                "steps": str(args.steps), "checkpoint": Path(meta["folder"]).name})
            plots.save_grid(torch.stack([images[i], recon[i].float().cpu()]), tmp / f"{name}.png", 2)
            frames = []
            for k, frame in enumerate(film):
                plots.save_grid(torch.stack([images[i], frame[i].float()]), tmp / "frame.png", 2)
                frames.append((f"{k}", Image.open(tmp / "frame.png").convert("RGB")))
            write_gif(frames, tmp / f"{name}.gif", ms=100)
        (tmp / "frame.png").unlink(missing_ok=True)
    mean = sum(distances) / len(distances)
    print(f"projected {len(files)} image(s) into {'W+' if args.w_plus else 'W'} ({args.distance} distance, "
          f"{args.steps} steps; mean final distance {mean:.4g}) to {out}: NAME.safetensors, NAME.png, NAME.gif")
    return 0


def cmd_translate(args: argparse.Namespace) -> int:
    """Translate a folder of images (or the run's held-out split) with an image-to-image run."""
    import torch
    from torchvision.utils import save_image
    from ganforge.observe.files import atomic_path

    nets, system, recipe, meta = _load_for_sampling(args.run, not args.no_ema)
    directions = getattr(system, "directions", None)
    if not directions or not callable(getattr(system, "translate", None)):
        raise GanforgeError(f"ganforge translate needs an image-to-image run (objective pix2pix or cyclegan); "
                            f"this run's objective is '{recipe.objective.name}'")
    if args.direction not in directions:
        raise GanforgeError(f"--direction {args.direction}: this run translates {', '.join(directions)}")
    _, in_shape, _ = directions[args.direction]
    if args.input:
        names, images = input_images(Path(args.input), in_shape, getattr(system.dataset, "direction", None))
    else:  # the held-out split the metrics use
        held = system.held_out()
        images = held.a if args.direction == "AtoB" else held.b
        if images is None:
            raise GanforgeError(f"this run's data has no held-out {args.direction[0]} images; pass --input FOLDER")
        names = [f"{i:06d}" for i in range(len(images))]
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise GanforgeError(f"cannot write to --out {out}: {err.strerror or err}") from None
    with torch.no_grad():
        for start in range(0, len(images), 64):
            result = system.translate(nets, images[start:start + 64].float(), args.direction)
            for name, image in zip(names[start:start + 64], result, strict=True):
                target = out / f"{name}.png"
                target.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(target) as tmp:
                    save_image(image.float(), str(tmp), normalize=True, value_range=(-1.0, 1.0))
    source = args.input or "the held-out split"
    print(f"translated {len(images)} images ({args.direction}) from {source} to {out}")
    return 0


def cmd_vocode(args: argparse.Namespace) -> int:
    """Speech through a vocoder run: analysis -> mel -> G -> wav (the system's vocode_files)."""
    import torch

    nets, system, recipe, _ = _load_for_sampling(args.run, not args.no_ema)
    if not callable(getattr(system, "vocode_files", None)):
        raise GanforgeError(f"ganforge vocode needs a vocoder run (objective hifigan); this run's objective is "
                            f"'{recipe.objective.name}'")
    source = Path(args.input) if args.input else None
    if args.threads < 1:
        raise GanforgeError(f"--threads must be at least 1, got {args.threads}")
    try:
        Path(args.out).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise GanforgeError(f"cannot write to --out {args.out}: {err.strerror or err}") from None
    if source is not None and not source.exists():
        raise GanforgeError(f"--input {source} does not exist; give a wav file or a folder of them")
    torch.set_num_threads(args.threads)
    try:
        count, seconds, compute = system.vocode_files(nets, source, Path(args.out))
    except ValueError as err:
        raise GanforgeError(f"--input: {err}") from None
    print(f"vocoded {count} files ({seconds:.1f} s of audio) from {args.input or 'the held-out utterances'} to "
          f"{args.out}: synthesis {compute:.2f} s on {args.threads} thread(s), real-time factor {compute / seconds:.3f}")
    return 0
