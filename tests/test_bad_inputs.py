"""The bad inputs issue #27 found, tried as a new user would: each is one clear line (exit 2),
with nothing half-written and nothing lost."""
import errno
import json
import os
import shutil
from pathlib import Path

import pytest

from ganforge.contract.recipes import load_recipe
from ganforge.training.engine import train

QUICK = ["log.progress=false", "log.sample_every=0", "metrics=[]", "log.film_every=0", "log.animate=false",
         "generator.args.hidden=[16]", "discriminator.args.hidden=[16]"]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """A finished toy_grid run with a film, its newest checkpoint and its samples."""
    out = tmp_path_factory.mktemp("toy") / "run"
    train(load_recipe("toy_grid", [f"out_dir={out}", "train.steps=4", "log.every=2", *QUICK, "log.film_every=2"]))
    return out


@pytest.fixture(scope="module")
def cond_run(tmp_path_factory):
    """A class-conditional toy run (the mixture's modes are its classes)."""
    out = tmp_path_factory.mktemp("cond") / "run"
    train(load_recipe("toy_grid", [f"out_dir={out}", "train.steps=2", "objective=conditional", *QUICK]))
    return out


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def test_animate_on_a_full_disk_keeps_the_previous_gif(toy_run, tmp_path, run_cli, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(toy_run, run)
    assert run_cli("animate", run)[0] == 0
    before = (run / "film.gif").read_bytes()
    from PIL import Image

    real_save = Image.Image.save

    def full_disk(self, fp, *args, **kwargs):  # a file: part of it is written, then the disk is full
        if not isinstance(fp, (str, os.PathLike)):
            return real_save(self, fp, *args, **kwargs)  # (pictures encoded in memory for the pages)
        Path(fp).write_bytes(b"GIF89a" + b"\0" * 10)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full_disk)
    code, _, err = run_cli("animate", run)
    assert code == 2
    assert "No space left on device" in _one_line(err) and "unchanged" in err
    assert (run / "film.gif").read_bytes() == before
    assert not list(run.glob(".*partial*"))


@pytest.mark.parametrize("field, value, says", [
    ("sample_shape", [3, 1000, 1000], "does not match the weights"),
    ("sample_shape", [-2], "sample_shape must be a list of 1 to 4 positive integers"),
    ("sample_shape", [0], "sample_shape must be a list of 1 to 4 positive integers"),
    ("sample_shape", "abc", "sample_shape must be a list of 1 to 4 positive integers"),
    ("num_classes", 10 ** 9, "does not match the weights"),  # (on the conditional run)
    ("num_classes", "ten", "num_classes must be a positive integer or null"),
])
def test_a_crafted_meta_json_is_refused_before_anything_is_allocated(toy_run, cond_run, tmp_path, run_cli, field,
                                                                     value, says):
    """meta.json is outside the checksums: its shape and class count are checked against the
    weights (networks built on the meta device) before a real network is made."""
    import resource

    ckpt = tmp_path / "ckpt"
    run = cond_run if field == "num_classes" else toy_run
    shutil.copytree(sorted((run / "checkpoints").iterdir())[-1], ckpt)
    meta = json.loads((ckpt / "meta.json").read_text())
    meta[field] = value
    (ckpt / "meta.json").write_text(json.dumps(meta))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code, _, err = run_cli("sample", ckpt, "--n", "4", "--out", tmp_path / "s.npz")
    assert code == 2 and says in _one_line(err), err
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 200, grown_mib  # [3,1000,1000] for real: an MLP with 3e6 outputs, gigabytes
    assert not (tmp_path / "s.npz").exists()


def test_a_symlink_inside_a_checkpoint_is_refused(toy_run, tmp_path, run_cli):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(sorted((toy_run / "checkpoints").iterdir())[-1], ckpt)
    outside = tmp_path / "elsewhere.safetensors"
    shutil.move(ckpt / "model.G.safetensors", outside)
    os.symlink(outside, ckpt / "model.G.safetensors")
    code, _, err = run_cli("sample", ckpt, "--n", "4", "--out", tmp_path / "s.npz")
    assert code == 2 and "is a symbolic link" in _one_line(err)


def test_sample_on_a_folder_that_is_no_run_says_so(tmp_path, run_cli):
    (tmp_path / "photos").mkdir()
    code, _, err = run_cli("sample", tmp_path / "photos", "--out", tmp_path / "s.png")
    assert code == 2 and "is not a checkpoint (no meta.json, no weights) nor a run folder" in _one_line(err)


def test_a_duplicated_recipe_key_is_refused(tmp_path, run_cli):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: {name: toy_grid}\nnetworks:\n  G: {name: mlp}\n  G: {name: dcgan}\n")
    code, _, err = run_cli("train", recipe, f"out_dir={tmp_path / 'out'}")
    assert code == 2 and "line 4: the key 'G' is given twice in one mapping (first on line 3)" in _one_line(err)
    code, _, err = run_cli("train", "toy_grid", "train={steps: 2, steps: 3}", f"out_dir={tmp_path / 'out'}")
    assert code == 2 and "the key 'steps' is given twice" in _one_line(err)
    assert not (tmp_path / "out").exists()


def test_a_metric_that_cannot_read_the_data_is_refused_at_start(tmp_path, run_cli, mnist_dir):
    code, _, err = run_cli("train", "mnist_seed", f"data.root={mnist_dir}", "metrics=[stacked_mnist]",
                           f"out_dir={tmp_path / 'out'}")
    assert code == 2 and "reads 3-channel 28x28 samples" in _one_line(err)
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_ganforge_eval_with_a_metric_that_cannot_read_the_run_is_one_line(tmp_path, run_cli, mnist_dir):
    from conftest import make_mnist_like

    make_mnist_like(mnist_dir, n=64, split="test")
    out = tmp_path / "run"
    train(load_recipe("mnist_seed", [f"data.root={mnist_dir}", f"out_dir={out}", "train.steps=1", "data.batch_size=8",
                                     "log.progress=false", "log.sample_every=0", "metrics=[]"]))
    code, _, err = run_cli("eval", out, "--metric", "stacked_mnist", "--n", "8")
    assert code == 2 and "reads 3-channel 28x28 samples" in _one_line(err)


def test_a_read_only_run_folder_is_one_line(tmp_path, run_cli, monkeypatch):
    """(as root, chmod does not stop writes: the file system's refusal is simulated)"""
    from ganforge.training import launch

    out = tmp_path / "out"
    out.mkdir()
    real_open = os.open

    def read_only(path, *args, **kwargs):
        if str(path).endswith(".lock"):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(launch.os, "open", read_only)
    code, _, err = run_cli("train", "toy_grid", f"out_dir={out}", "train.steps=2", *QUICK)
    assert code == 2 and f"cannot write to out_dir {out}: Read-only file system" in _one_line(err)


def test_thread_counts_are_bounded_by_the_cores(tmp_path, run_cli, monkeypatch):
    from ganforge.training import device

    monkeypatch.setattr(device.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    code, _, err = run_cli("train", "toy_grid", "train.threads=100000", f"out_dir={tmp_path / 'a'}", *QUICK)
    assert code == 2 and "train.threads=100000 is far more than this machine's 2 cores" in _one_line(err)
    threads, note = device.choose_threads(3, "cpu")
    assert threads == 3 and "more than this machine's 2 cores" in note
    assert device.choose_threads(2, "cpu") == (2, None)


def test_ctrl_c_during_start_up_is_one_line(run_cli, monkeypatch):
    import ganforge.contract.recipes

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ganforge.contract.recipes, "load_recipe", interrupted)
    code, _, err = run_cli("train", "toy_grid")
    assert code == 130 and "interrupted: ganforge train stopped before it finished" in err and "Traceback" not in err


def test_the_resume_hint_names_the_recipe_and_overrides(tmp_path, run_cli, monkeypatch):
    from types import SimpleNamespace

    import ganforge.training.engine

    out = tmp_path / "out"
    monkeypatch.setattr(ganforge.training.engine, "train", lambda recipe: SimpleNamespace(
        interrupted="SIGINT", output_dir=out, accelerator=SimpleNamespace(is_main_process=True)))
    code, text, _ = run_cli("train", "toy_grid", "train.steps=50", f"out_dir={out}", "resume=auto")
    assert code == 130
    assert f"resume with: ganforge train toy_grid train.steps=50 resume=auto out_dir={out}" in text


def test_one_plugin_registering_a_name_twice_is_named_once():
    """It was reported as two plugins registering the same name."""
    import ganforge
    from ganforge.errors import PluginError
    from ganforge.contract.manager import PluginManager
    from ganforge.plugins.losses import BCE

    class Twice:
        @ganforge.hookimpl
        def ganforge_register_losses(self, register):
            register("mine", BCE)
            register("mine", BCE)

    pm = PluginManager()
    pm.register(Twice(), name="twice")
    with pytest.raises(PluginError, match=r"plugin 'twice' \(.*\) registers loss 'mine' twice in its hook; "
                                          r"call register\(\) once per name"):
        pm.registry


def test_a_decay_start_that_rounds_to_the_last_step_is_one_line(tmp_path, run_cli):
    """(issue #25's list: train.steps=10 optim.lr_decay_start=0.96 was a ZeroDivisionError)"""
    code, _, err = run_cli("train", "toy_grid", "train.steps=10", "optim.lr_decay=linear", "optim.lr_decay_start=0.96",
                           f"out_dir={tmp_path / 'out'}", *QUICK)
    assert code == 2 and "optim.lr_decay_start is where the linear decay begins" in _one_line(err)
    assert not (tmp_path / "out").exists()


def test_acgan_trains_with_the_relativistic_loss(tmp_path, mnist_dir):
    """(issue #25: objective=acgan loss=relativistic failed at step 1 with a traceback)"""
    import math

    state = train(load_recipe("mnist_cgan", [f"data.root={mnist_dir}", f"out_dir={tmp_path}", "objective=acgan",
                                             "loss=relativistic", "generator.args={ngf: 4, fc: 16}",
                                             "discriminator={name: infogan, args: {ndf: 4, fc: 16}}",
                                             "train.steps=3", "data.batch_size=8", "log.every=3", *QUICK[:4]]))
    assert state.step == 3 and math.isfinite(state.history[-1]["loss_g"])
