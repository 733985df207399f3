"""Checkpoints: exact resume, atomic writes, corruption, interrupts, non-finite values."""
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import ganforge
from ganforge.contract.recipes import load_recipe
from ganforge.training.engine import train
from ganforge.errors import CheckpointError, GanforgeError
from ganforge.contract.manager import PluginManager

QUICK = ["log.progress=false", "metrics=[]", "log.sample_every=0"]


def _final_tensors(out: Path):
    folder = sorted((out / "checkpoints").iterdir())[-1]
    return {name: load_file(str(folder / f"{name}.safetensors"))
            for name in ("model.G", "model.D", "ema.G")}


def _losses(out: Path):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss_d"], r["loss_g"]) for r in rows if "loss_d" in r]


class _InterruptAt:
    """Sends this process SIGINT after generator step ``n``: the run stops as a user's would."""

    def __init__(self, n):
        self.n = n

    @ganforge.hookimpl
    def ganforge_step_end(self, state):
        if state.step == self.n:
            signal.raise_signal(signal.SIGINT)


def _assert_bitwise_resume(tmp_path, base, n):
    one = tmp_path / "one"
    train(load_recipe(None, base + [f"out_dir={one}", f"train.steps={2 * n}"]))
    two = tmp_path / "two"
    pm = PluginManager()
    pm.register(_InterruptAt(n), name="interrupt")
    stopped = train(load_recipe(None, base + [f"out_dir={two}", f"train.steps={2 * n}"]), plugins=pm)
    assert stopped.step == n
    state = train(load_recipe(None, base + [f"out_dir={two}", f"train.steps={2 * n}", "resume=auto"]))
    assert state.step == 2 * n
    a, b = _final_tensors(one), _final_tensors(two)
    for name in a:
        assert a[name].keys() == b[name].keys()
        for key in a[name]:
            assert torch.equal(a[name][key], b[name][key]), f"{name}.{key} differs after resume"
    assert _losses(one) == _losses(two)


def test_exact_resume_mlp_toy(tmp_path):
    base = ["data.name=toy_grid", "data.args={n: 2048}", "data.batch_size=64", "train.n_critic=2",
            "penalties=[{name: r1, weight: 0.1, every: 3}]", "train.ema=0.9", "train.z_dim=2",
            "optim.lr_decay=linear", "log.every=5", *QUICK]
    _assert_bitwise_resume(tmp_path, base, 20)  # 40 batches: stops mid-epoch (32 per epoch)


def test_exact_resume_dcgan_on_images(tmp_path, mnist_dir):
    base = ["data.name=mnist", f"data.root={mnist_dir}", "data.batch_size=16", "generator=dcgan",
            "discriminator=dcgan", "generator.args={ngf: 8}", "discriminator.args={ndf: 8}",
            "train.n_critic=2", "penalties=[{name: r1, weight: 1.0, every: 2}]", "train.ema=0.9",
            "train.z_dim=16", "log.every=3", *QUICK]
    _assert_bitwise_resume(tmp_path, base, 6)  # 256 images / 16 = 16 batches per epoch; 12 used


def _run_once(tmp_path, steps=4, *extra):
    out = tmp_path / "run"
    train(load_recipe("toy_grid", [f"out_dir={out}", f"train.steps={steps}", "log.checkpoint_every=2", *QUICK, *extra]))
    return out


def test_loading_never_unpickles(tmp_path, monkeypatch):
    out = _run_once(tmp_path)

    def refuse(*a, **k):
        raise AssertionError("pickle used while loading a checkpoint")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    state = train(load_recipe("toy_grid", [f"out_dir={out}", "train.steps=6", "resume=auto", *QUICK]))
    assert state.step == 6
    files = {p.suffix for p in (out / "checkpoints").rglob("*") if p.is_file()}
    assert files == {".safetensors", ".json"}


def test_rotation_keeps_the_last_k(tmp_path):
    out = _run_once(tmp_path, 8, "log.keep=2")
    assert [p.name for p in sorted((out / "checkpoints").iterdir())] == ["step-00000006", "step-00000008"]


@pytest.mark.parametrize("damage", ["truncate", "header", "missing", "meta"])
def test_corrupted_checkpoint_errors_and_auto_falls_back(tmp_path, damage, capsys):
    out = _run_once(tmp_path)
    newest = out / "checkpoints" / "step-00000004"
    target = newest / "model.G.safetensors"
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[:-50])
    elif damage == "header":
        data = bytearray(target.read_bytes())
        data[10:20] = b"\xff" * 10  # inside the JSON header
        target.write_bytes(bytes(data))
    elif damage == "missing":
        target.unlink()
    else:
        (newest / "meta.json").write_text("{not json")
    with pytest.raises(CheckpointError) as err:
        train(load_recipe("toy_grid", [f"out_dir={out}", "train.steps=6", f"resume={newest}", *QUICK]))
    assert str(newest) in str(err.value)
    state = train(load_recipe("toy_grid", [f"out_dir={out}", "train.steps=6", "resume=auto", *QUICK]))
    assert "skipping invalid checkpoint" in capsys.readouterr().out
    assert state.step == 6


def test_architecture_mismatch_lists_tensors(tmp_path):
    out = _run_once(tmp_path)
    with pytest.raises(CheckpointError, match=r"does not fit this recipe's network G \(generator\): mismatched tensors .*net\."):
        train(load_recipe("toy_grid", [f"out_dir={out}", "train.steps=6", "resume=auto",
                                       "generator.args.hidden=[64, 64]", *QUICK]))


def test_other_recipe_differences_warn(tmp_path, capsys):
    out = _run_once(tmp_path)
    state = train(load_recipe("toy_grid", [f"out_dir={out}", "train.steps=6", "resume=auto", "optim.lr_d=3e-4",
                                           "optim.betas=[0.0, 0.99]", "optim.weight_decay=1.0e-5", *QUICK]))
    out_text = capsys.readouterr().out
    assert "resuming with a recipe that differs from the checkpoint's" in out_text
    assert "optim.lr_d: 0.001 -> 0.0003" in out_text
    # the recipe's settings are the ones used, not the checkpoint's (only the moments are restored)
    group = state.optimizers["D"].param_groups[0]
    assert group["betas"] == (0.0, 0.99) and group["weight_decay"] == 1e-5
    assert group["lr"] == pytest.approx(3e-4 * (1 - 5 / 6))  # linear decay of the new base, set at the last step
    # train.steps changed under linear decay: the learning rate jumps, and the user is told
    assert ("train.steps changed from 4 to 6: the linear schedule of optimizers G, D jumps from 0 to 0.333 of "
            "the base learning rate at step 4") in out_text


class NaNLoss:
    """A test plugin: BCE that returns NaN at chosen D calls."""

    def __init__(self, bad):
        self.bad, self.calls = set(bad), 0

    @ganforge.hookimpl
    def ganforge_register_losses(self, register):
        from ganforge.plugins.losses import BCE

        plugin = self

        class Flaky(BCE):
            def d_loss(self, real, fake):
                plugin.calls += 1
                value = super().d_loss(real, fake)
                return value * float("nan") if plugin.calls in plugin.bad else value
        register("flaky", Flaky)


def test_nonfinite_steps_are_skipped_and_counted(tmp_path):
    pm = PluginManager()
    pm.register(NaNLoss({3, 4}), name="nan")
    state = train(load_recipe("toy_grid", [f"out_dir={tmp_path}", "loss=flaky", "train.steps=8",
                                           "log.every=4", *QUICK]), plugins=pm)
    assert state.skipped == 2 and state.step == 8
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["skipped"] == 2 and all(json.dumps(r).count("NaN") == 0 for r in rows)
    weights = load_file(str(tmp_path / "checkpoints" / "step-00000008" / "model.G.safetensors"))
    assert all(torch.isfinite(v).all() for v in weights.values())


def test_nonfinite_policy_stop(tmp_path):
    pm = PluginManager()
    pm.register(NaNLoss(set(range(3, 100))), name="nan")
    with pytest.raises(GanforgeError, match="stopped at step 4: non-finite losses \\(3 in a row\\)"):
        train(load_recipe("toy_grid", [f"out_dir={tmp_path}", "loss=flaky", "train.steps=50",
                                       "train.max_nonfinite=3", *QUICK]), plugins=pm)
    pm2 = PluginManager()
    pm2.register(NaNLoss({2}), name="nan")
    with pytest.raises(GanforgeError, match="stopped at step 1"):
        train(load_recipe("toy_grid", [f"out_dir={tmp_path / 'b'}", "loss=flaky", "train.steps=50",
                                       "train.nonfinite=stop", *QUICK]), plugins=pm2)


SCRIPT = """
import os, sys, time
from pathlib import Path
from ganforge import load_recipe
from ganforge.training.engine import train

def pause(tmp):
    if os.environ.get("PAUSE_AT") and tmp.name.endswith(os.environ["PAUSE_AT"]):
        Path(os.environ["READY"]).write_text(str(tmp))
        time.sleep(600)

train(load_recipe("toy_grid", sys.argv[1:]), _pause_in_checkpoint=pause)
"""


def _spawn(tmp_path, args, env_extra):
    env = dict(os.environ, WANDB_MODE="disabled", **env_extra)
    return subprocess.Popen([sys.executable, "-c", SCRIPT, *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, proc, timeout=120):
    start = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() - start < timeout
        time.sleep(0.1)


def test_sigkill_while_writing_keeps_the_previous_checkpoint(tmp_path):
    out = tmp_path / "run"
    ready = tmp_path / "ready"
    args = [f"out_dir={out}", "train.steps=8", "log.checkpoint_every=2", *QUICK]
    proc = _spawn(tmp_path, args, {"PAUSE_AT": "step-00000004", "READY": str(ready)})
    _wait_for(ready, proc)
    proc.kill()  # SIGKILL in the middle of writing step 4
    proc.wait()
    names = [p.name for p in (out / "checkpoints").iterdir()]
    assert "step-00000002" in names and "step-00000004" not in names
    state = train(load_recipe("toy_grid", args + ["resume=auto"]))
    assert state.step == 8
    assert (out / "checkpoints" / "step-00000008" / "meta.json").exists()


def test_sigterm_saves_and_says_how_to_resume(tmp_path):
    out = tmp_path / "run"
    args = [f"out_dir={out}", "train.steps=100000", "log.every=10", *QUICK]
    proc = _spawn(tmp_path, args, {})
    _wait_for(out / "metrics.jsonl", proc)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "interrupted by SIGTERM" in stdout and "resume=auto" in stdout
    saved = sorted((out / "checkpoints").iterdir())
    assert len(saved) == 1
    step = json.loads((saved[0] / "meta.json").read_text())["step"]
    assert 10 <= step < 100000


def test_wandb_offline_run_holds_the_metrics(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    train(load_recipe("toy_grid", [f"out_dir={out}", "train.steps=6", "log.every=2", "log.wandb=true",
                                   "log.wandb_project=ganforge-test", *QUICK]))
    # wandb-core closes a finished run's log file asynchronously, after finish() returns: on a busy
    # machine it can still hold only its header here (CI saw that once). A process exit runs this
    # same teardown (atexit), so `ganforge train` followed by `wandb sync` always finds the data.
    import wandb

    wandb.teardown()
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    data = b"".join(p.read_bytes() for p in runs[0].glob("*.wandb"))
    assert b"train/loss_d" in data and b"train/images_per_s" in data
    assert b"toy_grid" in data  # the recipe is the run's config
    assert (out / "metrics.jsonl").exists()  # the JSONL file is always written


def test_an_error_inside_a_phase_restores_signal_handlers_and_leaves_nothing_frozen(tmp_path):
    import signal

    seen = {}

    class Broken:
        @ganforge.hookimpl
        def ganforge_register_losses(self, register):
            from ganforge.plugins.losses import BCE

            class Raising(BCE):
                calls = 0

                def g_loss(self, fake, real=None):  # in G's phase, while D is frozen
                    Raising.calls += 1
                    if Raising.calls == 2:
                        raise RuntimeError("boom")
                    return super().g_loss(fake)
            register("raising", Raising)

        @ganforge.hookimpl
        def ganforge_train_start(self, state):
            seen["state"] = state

    before = signal.getsignal(signal.SIGINT)
    pm = PluginManager()
    pm.register(Broken(), name="broken")
    with pytest.raises(RuntimeError, match="boom"):
        train(load_recipe("toy_grid", [f"out_dir={tmp_path}", "loss=raising", "train.steps=5", *QUICK]), plugins=pm)
    assert signal.getsignal(signal.SIGINT) is before
    assert all(p.requires_grad for net in seen["state"].nets.values() for p in net.parameters())


def test_an_interrupted_cli_run_exits_non_zero_and_does_not_look_finished(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "ganforge", "train", "toy_grid", f"out_dir={out}",
                             "train.steps=100000", "log.every=10", *QUICK],
                            env=dict(os.environ, WANDB_MODE="disabled"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait_for(out / "metrics.jsonl", proc)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr  # 128 + SIGINT, as a shell reports it
    assert "interrupted by SIGINT" in stdout
    assert not (out / "samples-final.png").exists()
    step = json.loads(next((out / "checkpoints").iterdir()).joinpath("meta.json").read_text())["step"]
    assert (out / f"samples-{step:08d}.png").exists()


def test_re_saving_a_step_is_atomic(tmp_path, monkeypatch):
    """Writing a step that exists again: killed between moving the old copy aside and moving
    the new one in, the old copy comes back and resume=auto continues from it."""
    from ganforge.training import checkpoint as ckpt

    out = _run_once(tmp_path)
    folder = out / "checkpoints" / "step-00000004"
    before = load_file(str(folder / "model.G.safetensors"))
    real_replace, calls = os.replace, []

    def dies_after_the_first_rename(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", dies_after_the_first_rename)
    with pytest.raises(KeyboardInterrupt):
        ckpt.write_checkpoint(folder, {"model.G": {"w": torch.zeros(1)}}, {"step": 4})
    monkeypatch.setattr(ckpt.os, "replace", real_replace)
    assert not folder.exists()  # moved aside: nothing named step-4 for a moment
    assert ckpt.latest_valid(out / "checkpoints") == folder  # and back, whole
    assert torch.equal(load_file(str(folder / "model.G.safetensors"))["net.0.weight"], before["net.0.weight"])
    state = train(load_recipe("toy_grid", [f"out_dir={out}", "train.steps=6", "resume=auto", *QUICK]))
    assert state.step == 6


def test_metrics_tell_one_story_across_a_resume(tmp_path):
    """Rows an interrupted run logged after its last checkpoint are dropped on resume (they are
    logged again), so no step repeats; a fresh run moves an earlier run's file aside."""
    out = tmp_path / "run"
    train(load_recipe("toy_grid", [f"out_dir={out}", "train.steps=6", "log.every=1", "log.checkpoint_every=4",
                                   "log.keep=5", *QUICK]))
    import shutil

    shutil.rmtree(out / "checkpoints" / "step-00000006")  # as if killed after logging step 6, before saving it
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 7, "loss_d": 1.0')  # and a line cut short by the kill
    state = train(load_recipe("toy_grid", [f"out_dir={out}", "train.steps=8", "log.every=1", "resume=auto", *QUICK]))
    steps = [json.loads(r)["step"] for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and len(steps) == len(set(steps)) and steps[-1] == 8
    assert [r["step"] for r in state.history if "loss_d" in r][:4] == [1, 2, 3, 4]  # the plot covers the whole run
    (out / "checkpoints").rename(tmp_path / "gone")  # a crash before any checkpoint, then a fresh run
    train(load_recipe("toy_grid", [f"out_dir={out}", "train.steps=2", "log.every=1", *QUICK]))
    assert [json.loads(r)["step"] for r in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert len(list(out.glob("metrics-before-*.jsonl"))) == 1


def test_unwritable_output_is_one_clear_line(tmp_path, monkeypatch):
    from ganforge.training import checkpoint as ckpt
    from ganforge.cli import main

    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(GanforgeError, match="cannot use out_dir=.*file/run: Not a directory; choose another"):
        train(load_recipe("toy_grid", [f"out_dir={a_file / 'run'}", "train.steps=1", *QUICK]))
    out = _run_once(tmp_path)  # checkpoints at steps 2 and 4

    def disk_full(tensors, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt, "_save_tensors", disk_full)
    with pytest.raises(CheckpointError, match=r"could not write checkpoint .*step-00000006 \(No space left on device\); "
                                              r"the previous checkpoints are intact"):
        train(load_recipe("toy_grid", [f"out_dir={out}", "train.steps=6", "resume=auto", *QUICK]))
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["step-00000002", "step-00000004"]  # no half-written folder left behind
    monkeypatch.undo()
    assert main(["sample", str(out), "--n", "4", "--out", str(tmp_path / "s.npz")]) == 0


def test_same_size_corruption_is_caught_by_the_hashes(tmp_path, capsys):
    """NaN bytes written over weights keep the file's size: meta.json's SHA-256 catches it, so
    `sample` refuses with one line and resume=auto takes the previous checkpoint."""
    from ganforge.cli import main

    out = _run_once(tmp_path)
    newest = out / "checkpoints" / "step-00000004"
    target = newest / "model.G.safetensors"
    data = bytearray(target.read_bytes())
    data[-16:] = b"\xff\xff\xc0\x7f" * 4  # four float32 NaNs in the last tensor, same size
    target.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["sample", str(newest), "--n", "4", "--out", str(tmp_path / "s.npz")]) == 2
    err = capsys.readouterr().err
    assert "does not match its SHA-256 in meta.json" in err and err.count("\n") == 1
    assert not (tmp_path / "s.npz").exists()
    state = train(load_recipe("toy_grid", [f"out_dir={out}", "train.steps=6", "resume=auto", *QUICK]))
    assert "skipping invalid checkpoint" in capsys.readouterr().out and state.step == 6


def test_malformed_meta_is_one_clear_line(tmp_path):
    out = _run_once(tmp_path)
    meta_path = out / "checkpoints" / "step-00000004" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["files"]["../../elsewhere.safetensors"] = 10
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"names a file outside its folder"):
        train(load_recipe("toy_grid", [f"out_dir={out}", "train.steps=6", f"resume={meta_path.parent}", *QUICK]))
    del meta["step"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"is malformed: it needs 'step'"):
        train(load_recipe("toy_grid", [f"out_dir={out}", "train.steps=6", f"resume={meta_path.parent}", *QUICK]))


def test_a_checkpoint_of_a_newer_format_and_an_export_folder_are_one_line(tmp_path, run_cli):
    """Issue #35: a meta.json saying "format": 99 was sampled and resumed without a word, and
    `ganforge sample` on an export folder said "incomplete checkpoint"."""
    out = _run_once(tmp_path)
    folder = out / "checkpoints" / "step-00000004"
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "format": 99}))
    code, _, err = run_cli("sample", folder, "--n", "4", "--out", tmp_path / "s.npz")
    assert code == 2 and "says checkpoint format 99; this ganforge reads formats 1 to 2" in err
    assert err.count("\n") == 1 and not (tmp_path / "s.npz").exists()
    with pytest.raises(CheckpointError, match="upgrade ganforge"):
        train(load_recipe("toy_grid", [f"out_dir={out}", "train.steps=6", f"resume={folder}", *QUICK]))
    (folder / "meta.json").write_text(json.dumps(meta))
    assert run_cli("export", out, "--out", tmp_path / "exported")[0] == 0
    code, _, err = run_cli("sample", tmp_path / "exported", "--n", "4", "--out", tmp_path / "s.npz")
    assert code == 2 and "is a ganforge export (config.json, model.safetensors), not a run or a checkpoint" in err
    assert "ganforge.load_pretrained(" in err and err.count("\n") == 1


def test_checkpoints_by_wall_time(tmp_path):
    """log.checkpoint_minutes: a checkpoint at the first log step after that much time (here a
    few milliseconds: every log step); the default (10 minutes) leaves a short run one checkpoint."""
    fast = tmp_path / "fast"
    train(load_recipe("toy_grid", [f"out_dir={fast}", "train.steps=6", "log.every=2", "log.keep=10",
                                   "log.checkpoint_minutes=0.00001", *QUICK]))
    assert sorted(p.name for p in (fast / "checkpoints").iterdir()) == ["step-00000002", "step-00000004",
                                                                         "step-00000006"]
    default = tmp_path / "default"
    train(load_recipe("toy_grid", [f"out_dir={default}", "train.steps=6", "log.every=2", *QUICK]))
    assert [p.name for p in (default / "checkpoints").iterdir()] == ["step-00000006"]
    with pytest.raises(Exception, match=r"log.checkpoint_minutes must be >= 0"):
        load_recipe("toy_grid", ["log.checkpoint_minutes=-1"])


def test_resuming_an_older_checkpoint_sets_the_abandoned_branch_aside(tmp_path):
    """The reproduction from issue #16: a run with step-4, 5, 6; resumed from step-4 with
    log.keep=1 and interrupted at 5. The abandoned 5 and 6 are kept under other names and
    never chosen, the new step-5 is not rotated away, and resume=auto continues from it to the
    end of an uninterrupted run, bitwise."""
    base = ["toy_grid", "train.steps=6", "log.checkpoint_every=1", "log.every=1", "log.progress=false", "metrics=[]",
            "log.sample_every=0", "data.args={n: 1024}"]
    whole = tmp_path / "whole"
    train(load_recipe(base[0], [*base[1:], f"out_dir={whole}"]))
    run = tmp_path / "run"
    train(load_recipe(base[0], [*base[1:], f"out_dir={run}"]))
    pm = PluginManager()
    pm.register(_InterruptAt(5), name="interrupt")
    stopped = train(load_recipe(base[0], [*base[1:], f"out_dir={run}", "log.keep=1",
                                          f"resume={run / 'checkpoints' / 'step-00000004'}"]), plugins=pm)
    assert stopped.step == 5
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["abandoned-step-00000005", "abandoned-step-00000006", "step-00000005"]
    resumed = train(load_recipe(base[0], [*base[1:], f"out_dir={run}", "resume=auto"]))
    assert resumed.step == 6
    a, b = _final_tensors(whole), _final_tensors(run)
    for name in a:
        for key in a[name]:
            assert torch.equal(a[name][key], b[name][key]), f"{name}.{key}"
    assert (run / "checkpoints" / "abandoned-step-00000006" / "meta.json").is_file()  # kept
