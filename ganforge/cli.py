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
from ganforge.run.commands import cmd_directions, cmd_project, cmd_sample, cmd_translate, cmd_vocode
from ganforge.run.loading import dataset_of as _dataset, load_for_sampling as _load_for_sampling


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
    if state is not None:  # no collective follows: every process leaves the group together
        from ganforge.training.launch import leave_process_group

        leave_process_group(state)
        if not state.is_main_process:
            return 0
    results = evaluate_samples(samples, dataset, metrics, system.labels_of(noise), noise)
    print(json.dumps({"checkpoint": meta["folder"], "step": meta["step"],
                      "processes": state.num_processes if state is not None else 1, **results}, indent=1))
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
