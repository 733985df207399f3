"""The ``ganforge`` command line.

    ganforge train RECIPE [key.sub=value ...]     train (RECIPE: a YAML path or a name in recipes/)
    ganforge sample CHECKPOINT --n N --out FILE   samples as a PNG grid, .safetensors or .npz
                   [--label K|all]               (conditional runs: samples of class K / every class)
                   [--interpolate K]             latent walks of K points (slerp), a row per walk
                   [--truncation PSI] [--mix]    runs with a W space (stylegan2): towards the mean w; style mixing
    ganforge directions CHECKPOINT --out FILE.png  runs with a W space: SeFa's directions, a row each, -3 ... +3 sigma
    ganforge project CHECKPOINT --image F --out D  runs with a W space: images inverted into W (or --w-plus)
    ganforge eval CHECKPOINT [--metric NAME]      the recipe's metrics on generated samples
    ganforge translate RUN --out FOLDER           image-to-image runs: translate --input FOLDER
                   [--input FOLDER] [--direction BtoA]  (default: the held-out split)
    ganforge vocode RUN --out FOLDER              vocoder runs: speech -> mel -> speech, --input WAV|FOLDER
    ganforge animate RUN                          training film (2-D runs) and sample grids: GIF + HTML
    ganforge report RUN                           one offline HTML page: recipe, machine, curves, samples
    ganforge export RUN --out DIR [--push REPO]   sampling networks + config.json + model card (Hub convention)
    ganforge plugins [--json] [--args NAME]       every registered part and where it comes from; one's arguments
                                                  (an objective's: its networks, optimizers and phases)
    ganforge recipe list | show NAME [overrides]  shipped recipes; one with its bases resolved
    ganforge new-plugin NAME [--kind KIND]        a ready plugin package (entry point, example, test)
    ganforge bench RECIPE [--steps N]             throughput against plain PyTorch loops

Errors in the user's input print one line (``error: ...``) and exit with status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from ganforge.tools.catalog import cmd_plugins, cmd_recipe
from ganforge.errors import CheckpointError, ConfigError, DatasetError, GanforgeError
from ganforge.run.loading import dataset_of as _dataset, input_images, load_for_sampling as _load_for_sampling


def _warning_line(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {message}", file=sys.stderr)


def cmd_train(args: argparse.Namespace) -> int:
    from ganforge.contract.recipes import load_recipe
    from ganforge.training.engine import train

    import signal

    recipe = load_recipe(args.recipe, args.overrides)
    state = train(recipe)
    if state.interrupted:  # as a shell reports a process a signal ended: 130 (SIGINT), 143 (SIGTERM)
        if state.accelerator.is_main_process:
            import shlex

            kept = [o for o in args.overrides if o.partition("=")[0].strip() not in ("resume", "out_dir")]
            print("resume with: " + shlex.join(["ganforge", "train", args.recipe, *kept, "resume=auto",
                                                f"out_dir={state.output_dir}"]))
        return 128 + signal.Signals[state.interrupted].value
    return 0


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
    from ganforge.plugins.image.image_folder import EXTENSIONS
    from ganforge.run.trained import w_space

    nets, system, recipe, meta = _load_for_sampling(args.checkpoint, not args.no_ema)
    project = w_space(system, recipe.objective.name, "project")
    source, out = Path(args.image), Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise GanforgeError(f"--out {out} exists and is not an empty folder; choose a new folder")
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.suffix.lower() in EXTENSIONS) \
        if source.is_dir() else []
    if not files:
        raise GanforgeError(f"--image {source}: no image there (a file or a folder of {', '.join(EXTENSIONS)})")
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
            name = path.stem
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


def cmd_animate(args: argparse.Namespace) -> int:
    from ganforge.observe.animate import animate

    for path in animate(Path(args.run)):
        print(f"wrote {path}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from ganforge.observe.report import write_report

    print(f"wrote {write_report(Path(args.run))}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from ganforge.contract.manager import get_plugin_manager
    from ganforge.observe.sampling import evaluate_samples, sharded_generate

    import torch

    if args.n < 1:
        raise GanforgeError(f"--n must be at least 1, got {args.n}")
    nets, system, recipe, meta = _load_for_sampling(args.checkpoint, not args.no_ema)
    registry = get_plugin_manager().registry
    names = args.metric or [m.name for m in recipe.metrics]
    if not names:
        raise GanforgeError(f"the recipe names no metrics; pass --metric NAME "
                            f"(registered: {', '.join(registry.names('metric'))})")
    args_by_name = {m.name: m.args for m in recipe.metrics}
    dataset = getattr(system, "dataset", None) or _dataset(recipe, registry)
    metrics = {n: registry.build("metric", n, args_by_name.get(n, {}), dataset=dataset) for n in names}
    batch = args.batch_size or recipe.log.eval_batch_size
    if batch < 1:
        raise GanforgeError(f"--batch-size must be at least 1, got {batch}")
    from ganforge.training.launch import command_processes

    state = command_processes()  # under accelerate launch / torchrun: every process makes a share
    device = state.device if state is not None else torch.device("cpu")
    for module in nets.values():
        module.to(device)
    gen = torch.Generator().manual_seed(args.seed)
    noise = system.noise(args.n, "cpu", gen)  # the same on every process: rank-independent results
    moved = tuple(x.to(device) for x in noise) if isinstance(noise, (tuple, list)) else noise.to(device)
    samples = sharded_generate(system, nets, moved, batch, state)
    if state is not None and not state.is_main_process:
        return 0
    results = evaluate_samples(samples, dataset, metrics, system.labels_of(noise), noise)
    print(json.dumps({"checkpoint": meta["folder"], "step": meta["step"],
                      "processes": state.num_processes if state is not None else 1, **results}, indent=1))
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


def cmd_export(args: argparse.Namespace) -> int:
    from ganforge.run.export import export_run, push

    out = export_run(args.run, args.out, ema=not args.no_ema)
    print(f"exported to {out}: model.safetensors, config.json, README.md (load: ganforge.load_pretrained({str(out)!r}))")
    if args.push:
        print(f"uploaded: {push(out, args.push)}")
    return 0


def cmd_new_plugin(args: argparse.Namespace) -> int:
    from ganforge.tools.scaffold import new_plugin

    folder = new_plugin(args.name, args.kind, Path(args.dir))
    article = "an" if args.kind[0] in "aeiou" else "a"
    print(f"wrote {folder}: {article} {args.kind} registered as '{args.name}'. Next: cd {folder} && "
          f"pip install '.[test]' && python -m pytest && ganforge plugins")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from ganforge.bench.compare import run_from_args

    return run_from_args(args)


def build_parser() -> argparse.ArgumentParser:
    from ganforge import __version__

    parser = argparse.ArgumentParser(prog="ganforge", description="Train GANs at any scale.")
    parser.add_argument("--version", action="version", version=f"ganforge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train from a recipe", formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="recipes: 'ganforge recipe list' shows the shipped ones, 'ganforge recipe show NAME "
                              "[overrides]' one with every key.\noutputs: runs/<recipe name>/ (or out_dir=FOLDER): "
                              "checkpoints/, samples, losses.png, metrics.jsonl, run.json.\nresume: the same "
                              "command with resume=auto continues from the newest checkpoint, exactly.\n"
                              "several processes: accelerate launch --config_file "
                              "recipes/accelerate/cpu_2proc.yaml -m ganforge train RECIPE (README: 'Several "
                              "processes').")
    p.add_argument("recipe", help="a recipe YAML file, or the name of one in recipes/")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.steps=500")
    p.set_defaults(func=cmd_train)
    for name, func, helptext in (("sample", cmd_sample, "write samples from a checkpoint"),
                                 ("eval", cmd_eval, "evaluate a checkpoint's generator")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("checkpoint", help="a checkpoint folder (or a run folder: its newest)")
        p.add_argument("--n", type=int, help=f"number of samples (default {64 if name == 'sample' else 2500}; "
                       "with --interpolate: of walks, default 8)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--no-ema", action="store_true", help="use the raw generator, not its EMA")
        if name == "sample":
            p.add_argument("--out", required=True, help="FILE.png, FILE.safetensors or FILE.npz")
            p.add_argument("--label", help="class-conditional runs: a class index, or 'all' (a row per class)")
            p.add_argument("--interpolate", type=int, metavar="K", help="latent walks of K points, one per row")
            p.add_argument("--truncation", type=float, metavar="PSI", help="runs with a W space (stylegan2): "
                           "psi in [0, 1] towards the mean w (a conditional run: its class's); 1: none")
            p.add_argument("--mix", action="store_true", help="runs with a W space: a style-mixing grid of --n "
                           "(default 4) row and column sources, coarse / middle / fine styles")
        else:
            p.add_argument("--metric", action="append", help="metric name (repeatable); default: the recipe's")
            p.add_argument("--batch-size", type=int, help="samples per forward pass (default: the recipe's "
                           "log.eval_batch_size); under accelerate launch each process makes a share")
        p.set_defaults(func=func)
    for name, func, helptext in (("animate", cmd_animate, "the training film and sample grids as GIF + HTML"),
                                 ("report", cmd_report, "one offline HTML report of a run (also while training)")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("run", help="a run folder (the out_dir of a training run)")
        p.set_defaults(func=func)
    p = sub.add_parser("translate", help="translate images with an image-to-image run (pix2pix, cyclegan)")
    p.add_argument("run", help="a checkpoint folder (or a run folder: its newest)")
    p.add_argument("--input", help="a folder of images (default: the run's held-out split)")
    p.add_argument("--out", required=True, help="a folder for the translated PNGs (same relative names)")
    p.add_argument("--direction", default="AtoB", help="AtoB (default) or BtoA (cyclegan)")
    p.add_argument("--no-ema", action="store_true", help="use the raw generator, not its EMA")
    p.set_defaults(func=cmd_translate)
    p = sub.add_parser("vocode", help="speech through a vocoder run (hifigan): wav -> mel -> wav")
    p.add_argument("run", help="a checkpoint folder (or a run folder: its newest)")
    p.add_argument("--input", help="a wav/flac file or a folder of them (default: the run's held-out utterances)")
    p.add_argument("--out", required=True, help="a folder for the vocoded wavs (same relative names)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for synthesis (default 1: the real-time factor of one)")
    p.add_argument("--no-ema", action="store_true", help="use the raw generator, not its EMA")
    p.set_defaults(func=cmd_vocode)
    p = sub.add_parser("directions", help="runs with a W space (stylegan2): SeFa's semantic directions as an edit grid")
    p.add_argument("checkpoint", help="a checkpoint folder (or a run folder: its newest)")
    p.add_argument("--out", required=True, help="FILE.png: a row per direction, -span ... +span sigma")
    p.add_argument("--k", type=int, default=5, help="directions, largest first (default 5)")
    p.add_argument("--steps", type=int, default=7, help="images per row (default 7)")
    p.add_argument("--span", type=float, default=3.0, help="the edit's reach in standard deviations of w (default 3)")
    p.add_argument("--seed", type=int, default=0, help="the z edited")
    p.add_argument("--label", type=int, help="conditional runs: the class (default 0)")
    p.add_argument("--no-ema", action="store_true", help="use the raw generator, not its EMA")
    p.set_defaults(func=cmd_directions)
    p = sub.add_parser("project", help="runs with a W space (stylegan2): invert images into W by optimisation")
    p.add_argument("checkpoint", help="a checkpoint folder (or a run folder: its newest)")
    p.add_argument("--image", required=True, help="an image, or a folder of them, of the run's size and channels")
    p.add_argument("--out", required=True, help="a new folder: NAME.safetensors (ws), NAME.png, NAME.gif per image")
    p.add_argument("--steps", type=int, default=1000, help="optimisation steps (default 1000, as StyleGAN2's)")
    p.add_argument("--w-plus", action="store_true", help="one w per layer (W+) instead of one w")
    p.add_argument("--distance", default="discriminator", help="discriminator (default: the run's D's features "
                   "+ pixels), mnist (the MNIST classifier's features + pixels) or pixels")
    p.add_argument("--label", type=int, help="conditional runs: the class to project into (default 0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-ema", action="store_true", help="use the raw generator, not its EMA")
    p.set_defaults(func=cmd_project)
    p = sub.add_parser("export", help="a run's sampling networks as a folder in the Hugging Face Hub's convention")
    p.add_argument("run", help="a run folder (its newest checkpoint) or a checkpoint folder")
    p.add_argument("--out", required=True, help="a new folder: model.safetensors, config.json, README.md")
    p.add_argument("--no-ema", action="store_true", help="the raw networks, not their EMA copies")
    p.add_argument("--push", metavar="REPO", help="also upload the folder to this Hub model repository")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("recipe", help="list the shipped recipes, or show one with its bases resolved")
    p.add_argument("action", choices=["list", "show"])
    p.add_argument("name", nargs="?", help="show: a recipe name or path")
    p.add_argument("overrides", nargs="*", help="show: dotted overrides, e.g. train.steps=500")
    p.set_defaults(func=cmd_recipe)
    p = sub.add_parser("new-plugin", help="write a ready plugin package (entry point, example part, tests)")
    p.add_argument("name", help="the part's name, also the module's: ganforge_NAME")
    p.add_argument("--kind", default="generator", help="generator (default), discriminator, network (a "
                   "system's own kind: an encoder), loss, penalty, objective, dataset, metric or augment")
    p.add_argument("--dir", default=".", help="where to write ganforge-NAME/ (default: here)")
    p.set_defaults(func=cmd_new_plugin)
    p = sub.add_parser("bench", help="throughput against plain PyTorch loops (benchmarks/)")
    from ganforge.bench.compare import add_arguments

    add_arguments(p)
    p.set_defaults(func=cmd_bench)
    p = sub.add_parser("plugins", help="list every registered part and the plugin providing it")
    p.add_argument("--json", action="store_true", help="machine-readable, with each part's arguments")
    p.add_argument("--args", metavar="NAME", help="one part's documentation and arguments (with defaults)")
    p.set_defaults(func=cmd_plugins)
    return parser


def _say(line: str, same_everywhere: bool) -> None:
    """An error line on stderr. Under a multi-process launch (torchrun, accelerate launch) an
    error every rank meets alike (a recipe's, the data's, a checkpoint's) is printed once, by
    rank 0; any other is printed by each rank that met it, marked with its rank."""
    import os

    rank, world = os.environ.get("RANK", "0"), os.environ.get("WORLD_SIZE", "1")
    if not (world.isdigit() and int(world) > 1):
        print(line, file=sys.stderr)
    elif same_everywhere:
        if rank == "0":
            print(line, file=sys.stderr)
    else:
        print(f"[rank {rank}] {line}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    warnings.showwarning = _warning_line
    args = build_parser().parse_args(argv)
    if hasattr(args, "n"):  # sample / eval: remember whether --n was given, then its default
        args.n_given = args.n is not None
        args.n = args.n if args.n_given else 64 if args.command == "sample" else 2500
    try:
        return args.func(args)
    except GanforgeError as err:
        _say(f"error: {err}", same_everywhere=isinstance(err, (ConfigError, DatasetError, CheckpointError)))
        return 2
    except OSError as err:  # a full disk, a read-only folder: what and where, in one line
        where = f" ({err.filename})" if err.filename else ""
        print(f"error: ganforge {args.command} could not write or read a file{where}: {err.strerror or err}; "
              f"any file it was replacing is unchanged", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before training's own handler is in place (start-up), or after
        print(f"interrupted: ganforge {args.command} stopped before it finished (Ctrl-C)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
