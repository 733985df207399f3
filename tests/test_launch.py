"""Launching: the README's multi-process commands start the processes they name, and a launch
that would start fewer than it was asked for is refused in one line (issue #27: accelerate 1.15
runs a MULTI_CPU config as ONE process, and nothing noticed)."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
QUICK = ["train.steps=4", "log.progress=false", "log.film_every=0", "log.animate=false", "log.eval_every=0",
         "metrics=[]", "log.sample_every=0"]


def readme_command(pattern: str) -> str:
    """The one README line (inside a bash block) that contains ``pattern``."""
    lines = [line for line in (ROOT / "README.md").read_text().splitlines()
             if pattern in line and not line.lstrip().startswith("#") and "accelerate launch" in line]
    assert len(lines) == 1, lines
    return lines[0].strip()


def _run(command: str, tmp_path: Path, env: dict | None = None, extra: str | None = None) -> subprocess.CompletedProcess:
    command = re.sub(r"(?<![\w/])\.venv/bin/", f"{BIN}/", command)  # the README's venv is this test's
    full = f"{command} " + (extra if extra is not None else f"out_dir={tmp_path / 'run'} " + " ".join(QUICK))
    env = dict(os.environ if env is None else env, WANDB_MODE="disabled")
    return subprocess.run(full, shell=True, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_the_readme_cpu_launch_starts_two_processes(tmp_path):
    command = readme_command("cpu_2proc.yaml -m ganforge train")
    proc = _run(command, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["processes"] == 2, record


@pytest.mark.slow
def test_multi_gpu_flag_without_gpus_trains_on_the_cpu_over_gloo(tmp_path):
    """`accelerate launch --multi_gpu` on a CPU-only machine: two processes, really distributed
    (it used to start two independent runs, which ganforge refused)."""
    env = dict(os.environ)
    env.pop("ACCELERATE_USE_CPU", None)
    proc = _run(f"{BIN}/accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --main_process_port 0 "
                "--mixed_precision no --dynamo_backend no -m ganforge train toy_grid", tmp_path, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "run.json").read_text())["processes"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("machines", [1, 2])
def test_a_launch_that_starts_fewer_processes_than_asked_is_refused(tmp_path, machines):
    """A MULTI_CPU config (the old cpu_2proc.yaml; with num_machines 2, one machine launched
    alone) goes to accelerate's simple launcher, which starts one process."""
    config = tmp_path / "multi_cpu.yaml"
    config.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: MULTI_CPU\n"
                      f"num_machines: {machines}\nnum_processes: 2\nmachine_rank: 0\nmixed_precision: 'no'\n"
                      "use_cpu: true\nmain_process_ip: 127.0.0.1\nmain_process_port: 29531\n")
    proc = _run(f"ACCELERATE_USE_CPU=1 {BIN}/accelerate launch --config_file {config} -m ganforge train toy_grid",
                tmp_path)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and re.search(r"asked for 2 processes \(num_processes: 2 in .*multi_cpu.yaml\) "
                                         r"but 1 started", lines[0]), proc.stderr[-2000:]
    assert "MULTI_GPU" in lines[0]
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_launcher_request_reads_the_parent_command_line(monkeypatch, tmp_path):
    """What the launcher asked for, from its argv: --num_processes wins over the config file."""
    from ganforge import accel

    config = tmp_path / "c.yaml"
    config.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: MULTI_GPU\nnum_processes: 3\n"
                      "num_machines: 1\nmixed_precision: 'no'\nuse_cpu: false\n")
    cmdline = tmp_path / "cmdline"
    monkeypatch.setattr(accel.os, "getppid", lambda: 4242)
    real_path = accel.Path
    monkeypatch.setattr(accel, "Path", lambda p: cmdline if p == "/proc/4242/cmdline" else real_path(p))
    monkeypatch.setenv("ACCELERATE_DYNAMO_BACKEND", "NO")

    def parent(*argv):
        cmdline.write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
        return accel.launcher_request()

    assert parent("/v/bin/python", "/v/bin/accelerate", "launch", "--config_file", str(config), "-m", "x") \
        == (3, f"num_processes: 3 in {config}")
    assert parent("/v/bin/accelerate", "launch", "--config_file", str(config), "--num_processes", "2", "s.py")[0] == 2
    assert parent("python", "-m", "accelerate.commands.launch", "--num_processes", "4", "s.py")[0] == 4
    assert parent("python", "train.py") is None  # not accelerate's launcher
    monkeypatch.delenv("ACCELERATE_DYNAMO_BACKEND")
    assert parent("/v/bin/accelerate", "launch", "--num_processes", "2", "s.py") is None  # not launched by it


@pytest.mark.slow
def test_the_readme_eval_launch_uses_both_processes_and_matches_one_process(tmp_path):
    """`ganforge eval` under the README's 2-process launch: each process makes a share of the
    samples (batches of --batch-size), the main one computes the metrics, and the values are
    those of one process with the same seed."""
    from ganforge.config import load_recipe
    from ganforge.engine import train

    run = tmp_path / "runs" / "toy_grid"
    train(load_recipe("toy_grid", [f"out_dir={run}", *[q for q in QUICK if q != "metrics=[]"], "train.steps=30"]))
    command = readme_command("cpu_2proc.yaml -m ganforge eval").replace("runs/toy_grid", str(run))
    two = _run(command.replace("--n 20000", "--n 3000 --batch-size 700"), tmp_path, extra="")
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([str(BIN / "ganforge"), "eval", str(run), "--n", "3000", "--batch-size", "700"],
                         capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1"))  # as torchrun sets
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = json.loads(two.stdout[two.stdout.index("{"):]), json.loads(one.stdout[one.stdout.index("{"):])
    assert a.pop("processes") == 2 and b.pop("processes") == 1
    assert a.pop("checkpoint") == b.pop("checkpoint") and a["step"] == b["step"] == 30
    assert a.keys() == b.keys() and "mixture/modes" in a
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), key
