"""Two real CPU processes over gloo (torchrun, ACCELERATE_USE_CPU=1)."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = textwrap.dedent("""
    import sys, torch
    from safetensors.torch import save_file
    from ganforge.config import load_recipe
    from ganforge.engine import train
    from ganforge.manager import get_plugin_manager
    import ganforge
    from ganforge.plugins.objectives import Unconditional

    first = {}

    class Recording(Unconditional):
        def d_loss(self, batch):
            first.setdefault("real", self._real(batch).detach().clone())
            return super().d_loss(batch)

    class Plugin:
        @ganforge.hookimpl
        def ganforge_register_objectives(self, register):
            register("recording", lambda *, generator, discriminator, loss, z_dim:
                     Recording(generator, discriminator, loss, z_dim))

    get_plugin_manager().register(Plugin(), name="recording")
    state = train(load_recipe("toy_grid", sys.argv[1:] + ["objective=recording"]))
    acc = state.accelerator
    out = {f"G.{k}": v for k, v in acc.unwrap_model(state.generator).state_dict().items()}
    out.update({f"D.{k}": v for k, v in acc.unwrap_model(state.discriminator).state_dict().items()})
    out.update({f"E.{k}": v for k, v in state.ema.module.state_dict().items()})
    out["real"] = first["real"]
    save_file({k: v.contiguous() for k, v in out.items()}, f"{state.output_dir}/rank{acc.process_index}.safetensors")
""")


def _torchrun(tmp_path, nproc, *args):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, ACCELERATE_USE_CPU="1", WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(script), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


BASE = ["log.progress=false", "metrics=[]", "log.sample_every=0", "train.ema=0.9",
        "data.args={n: 4096}", "data.batch_size=32", "log.every=5",
        "penalties=[{name: r1, weight: 0.1, every: 2}]"]


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    out = tmp / "run"
    proc = _torchrun(tmp, 2, f"out_dir={out}", "train.steps=10", *BASE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_ranks_hold_identical_weights_and_drew_different_data(two_rank_run):
    out, _ = two_rank_run
    r0, r1 = load_file(str(out / "rank0.safetensors")), load_file(str(out / "rank1.safetensors"))
    for key in r0:
        if key != "real":
            assert torch.equal(r0[key], r1[key]), key
    assert not torch.equal(r0["real"], r1["real"])


def test_only_rank0_writes_and_logs_are_averaged(two_rank_run):
    out, proc = two_rank_run
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss_d" in r] == [5, 10]  # one writer, not two
    assert len(list((out / "checkpoints").iterdir())) == 1
    assert proc.stdout.count("checkpoint:") == 1


def test_two_rank_checkpoint_resumes_on_one_and_back(two_rank_run, tmp_path):
    out, _ = two_rank_run
    from ganforge.config import load_recipe
    from ganforge.engine import train

    state = train(load_recipe("toy_grid", [f"out_dir={out}", "train.steps=14", "resume=auto", *BASE]))
    assert state.step == 14
    proc = _torchrun(tmp_path, 2, f"out_dir={out}", "train.steps=18", "resume=auto", *BASE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "step-00000018" in {p.name for p in (out / "checkpoints").iterdir()}


def test_world_size_trap_is_refused(tmp_path):
    """WORLD_SIZE > 1 while Accelerate sees one process (`--multi_gpu` without GPUs)."""
    env = dict(os.environ, WANDB_MODE="disabled")
    env.pop("ACCELERATE_USE_CPU", None)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "ganforge", "train", "toy_grid", f"out_dir={tmp_path}"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode != 0
    assert proc.stderr.count("WORLD_SIZE=2 but Accelerate sees a single process") == 2  # both ranks
    assert "Traceback" not in proc.stderr.split("error: WORLD_SIZE")[0]
    assert not (tmp_path / "checkpoints").exists()


def test_second_run_on_the_same_folder_is_refused(tmp_path):
    from ganforge.engine import _RunLock
    from ganforge.errors import GanforgeError

    with _RunLock(tmp_path):
        with pytest.raises(GanforgeError, match="is in use by another run"):
            _RunLock(tmp_path).__enter__()
    with _RunLock(tmp_path):  # released: usable again
        pass
