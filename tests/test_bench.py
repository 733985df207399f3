"""The throughput benchmark's machinery (not its speed: speed is never a test)."""
import json

from conftest import make_mnist_like
from ganforge.bench import run, table


def test_bench_reports_every_case_consistently(tmp_path, run_cli):
    data = make_mnist_like(tmp_path / "mnist", n=256)
    make_mnist_like(data, n=64, split="test")
    import statistics
    import time

    start = time.perf_counter()
    report = run("mnist_seed", [f"data.root={data}", "data.batch_size=32", "train.precision=no"], warmup=2, steps=3, repeats=2)
    wall = time.perf_counter() - start
    assert set(report["results"]) == {"ganforge", "eager", "reference"}
    assert len(report["results"]["eager"]["all_seconds"]) == 2
    assert report["flops_per_step"] > 1e8  # G forward alone is ~2*32*(100*256+...+1024*784) FLOPs
    for case, r in report["results"].items():
        # the figures come from the timed rounds (the median of 2, 3 steps of one 32-image
        # batch each), and the timed rounds fit inside the call's own wall time
        rounds = r.get("all_seconds", [r["seconds"]])  # (the reference loop runs once)
        median = statistics.median(rounds)
        assert r["seconds"] == median and 0 < median and r["step_ms"] == 1000 * median / 3
        assert abs(r["images_per_s"] - 32 * 3 / median) < 1e-6 * r["images_per_s"]
        assert (r["tflops"] is None) == (case == "reference")
    assert sum(sum(r.get("all_seconds", [r["seconds"]])) for r in report["results"].values()) < wall
    text = table(report)
    assert "vs eager" in text and "per-step overhead" in text and "reference" in text
    code, out, err = run_cli("bench", "toy_grid", "--steps", "3", "--warmup", "1", "--repeats", "1",
                             "--results", tmp_path / "results")
    assert code == 0, err
    saved = json.loads(next((tmp_path / "results").glob("toy_grid-*.json")).read_text())
    assert saved["results"]["ganforge"]["step_ms"] > 0 and "reference" not in saved["results"]
    assert saved["torch"] and saved["device"] and saved["date"]



def test_bench_times_the_loader_of_a_file_dataset_and_names_the_step_path(tmp_path):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(48):
        Image.new("RGB", (20, 20), (5 * i, 0, 255 - 5 * i)).save(folder / f"{i}.png")
    overrides = ["data.name=image_folder", f"data.root={folder}", "data.args.size=16",
                 "data.batch_size=8", "data.num_workers=1", "generator=dcgan", "discriminator=dcgan",
                 "generator.args.ngf=8", "discriminator.args.ndf=8", "train.precision=no"]
    report = run("toy_grid", overrides, warmup=1, steps=3, repeats=1)
    assert report["ganforge_path"] == "eager step"  # a CPU: nothing to capture
    assert report["num_workers"] == 1 and report["loader_images_per_s"] > 0
    assert "data loader alone (1 workers)" in table(report)
    # an in-memory dataset has no loader to time; bf16 also times the fp32 eager baseline
    report = run("toy_grid", ["train.precision=bf16"], warmup=1, steps=2, repeats=1)
    assert report["loader_images_per_s"] is None
    assert set(report["results"]) == {"ganforge", "eager", "eager_fp32"}
    assert report["results"]["eager_fp32"]["tflops"] is None


def test_thread_policy(monkeypatch):
    """train.threads: a number is used; auto leaves OMP_NUM_THREADS (a user's or launcher's
    choice) and GPUs alone, and otherwise takes the cores other work leaves idle, at least one."""
    from ganforge import accel

    monkeypatch.setattr(accel.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert accel.choose_threads(3, "cpu") == (3, None)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert accel.choose_threads("auto", "cpu") == (None, None)
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert accel.choose_threads("auto", "cuda") == (None, None)
    monkeypatch.setattr(accel.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    for busy, threads in ((0.2, 4), (1.3, 3), (2.6, 1), (9.0, 1)):
        monkeypatch.setattr(accel, "busy_cores", lambda seconds=0.3, b=busy: b)
        chosen, note = accel.choose_threads("auto", "cpu")
        assert chosen == threads and (note is None) == (threads == 4)
    assert "busy with other work; using 1 thread(s)" in note
    monkeypatch.undo()
    assert 0 <= accel.busy_cores(0.05) <= (accel.os.cpu_count() or 1) + 1e-6  # the real /proc/stat


def test_bench_threads_check_times_each_setting_alone_and_next_to_a_busy_process(monkeypatch):
    from ganforge.bench import threads_check, threads_table

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    report = threads_check("toy_grid", ["data.args.n=512"], warmup=1, steps=3)
    assert [r["load"] for r in report["rows"]] == ["alone", "next to 1 busy process"]
    c = str(report["cores"])
    for r in report["rows"]:
        assert r["auto"] > 0 and r["1"] > 0 and r[c] > 0
    if report["cores"] > 1:  # the busy process takes a core: auto leaves it one
        assert report["rows"][1]["auto_threads"] < report["cores"]
    assert "auto / best" in threads_table(report)
    assert __import__("os").environ["OMP_NUM_THREADS"] == "1"  # restored


def test_flops_are_counted_for_a_step_whose_penalty_differentiates_d():
    """FlopCounterMode's module hooks broke R1's autograd.grad inside the counted step
    (a penalty due in every D step: `ganforge bench` failed with a traceback)."""
    import torch

    from ganforge.bench import count_flops
    from ganforge.config import load_recipe

    with_r1 = count_flops(load_recipe("toy_grid", ["penalties=[{name: r1, weight: 0.1}]", "train.n_critic=2"]),
                          torch.device("cpu"))
    without = count_flops(load_recipe("toy_grid", ["penalties=[]", "train.n_critic=2"]), torch.device("cpu"))
    assert with_r1 > without > 0  # R1's double backward is counted too
