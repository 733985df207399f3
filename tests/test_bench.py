"""The throughput benchmark's machinery (not its speed: speed is never a test)."""
import json

from conftest import make_mnist_like
from ganforge.bench.compare import run, table


def test_bench_reports_every_case_consistently(tmp_path, run_cli):
    data = make_mnist_like(tmp_path / "mnist", n=256)
    make_mnist_like(data, n=64, split="test")
    import statistics
    import time

    start = time.perf_counter()
    report = run("mnist_seed", [f"data.root={data}", "data.batch_size=32", "train.precision=no"], warmup=2, steps=9,
                 rounds=3)
    wall = time.perf_counter() - start
    assert set(report["results"]) == {"ganforge", "eager", "reference"}
    assert report["block"] == 3 and report["steps"] == 9
    assert len(report["results"]["eager"]["all_seconds"]) == len(report["results"]["ganforge"]["all_seconds"]) == 3
    assert report["flops_per_step"] > 1e8  # G forward alone is ~2*32*(100*256+...+1024*784) FLOPs
    for case, r in report["results"].items():
        # the figures come from the timed blocks (the median of 3 blocks of 3 steps of one
        # 32-image batch each; the reference loop runs once), inside the call's own wall time
        rounds = r.get("all_seconds", [r["seconds"]])
        median = statistics.median(rounds)
        assert r["seconds"] == median and 0 < median and r["step_ms"] == 1000 * median / r["steps"]
        assert abs(r["images_per_s"] - 32 * r["steps"] / median) < 1e-6 * r["images_per_s"]
        assert (r["tflops"] is None) == (case == "reference")
    assert sum(sum(r.get("all_seconds", [r["seconds"]])) for r in report["results"].values()) < wall
    # the overhead is the median of the pairs' ratios, inside its own interval
    o = report["overhead"]
    pairs = [g / e for g, e in zip(report["results"]["ganforge"]["all_seconds"],
                                  report["results"]["eager"]["all_seconds"], strict=True)]
    assert o["ratio"] == statistics.median(pairs) and o["low"] <= o["ratio"] <= o["high"]
    assert "only 3 rounds" in o["unstable"]
    m = report["machine"]
    assert m["cpu_capability"] and isinstance(m["native_bf16"], bool) and len(m["loadavg"]) == 3
    text = table(report)
    assert "vs eager" in text and "per-step overhead" in text and "reference" in text
    assert "95% interval" in text and "UNSTABLE: only 3 rounds" in text and "--rounds 6" in text
    code, out, err = run_cli("bench", "toy_grid", "--steps", "6", "--rounds", "2", "--warmup", "1",
                             "--results", tmp_path / "results")
    assert code == 0, err
    assert "95% interval" in out and "UNSTABLE" in out
    saved = json.loads(next((tmp_path / "results").glob("toy_grid-*.json")).read_text())
    assert saved["results"]["ganforge"]["step_ms"] > 0 and "reference" not in saved["results"]
    assert saved["torch"] and saved["device"] and saved["date"]
    assert saved["overhead"]["low"] <= saved["overhead"]["ratio"] <= saved["overhead"]["high"]
    assert saved["rounds"] == 2 and saved["block"] == 3


def test_bench_times_the_loader_of_a_file_dataset_and_names_the_step_path(tmp_path):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(48):
        Image.new("RGB", (20, 20), (5 * i, 0, 255 - 5 * i)).save(folder / f"{i}.png")
    overrides = ["data.name=image_folder", f"data.root={folder}", "data.args.size=16",
                 "data.batch_size=8", "data.num_workers=1", "generator=dcgan", "discriminator=dcgan",
                 "generator.args.ngf=8", "discriminator.args.ndf=8", "train.precision=no"]
    report = run("toy_grid", overrides, warmup=1, steps=3, rounds=1)
    assert report["ganforge_path"] == "eager step"  # a CPU: nothing to capture
    assert report["num_workers"] == 1 and report["loader_images_per_s"] > 0
    assert "data loader alone (1 workers)" in table(report)
    # an in-memory dataset has no loader to time; bf16 also times the fp32 eager baseline
    report = run("toy_grid", ["train.precision=bf16"], warmup=1, steps=2, rounds=1)
    assert report["loader_images_per_s"] is None
    assert set(report["results"]) == {"ganforge", "eager", "eager_fp32"}
    assert report["results"]["eager_fp32"]["tflops"] is None
    # train.autocast_cache=auto: the eager step caches weight casts, and the bare loop follows
    assert report["autocast_cache"] == {"ganforge": True, "eager": True}
    report = run("toy_grid", ["train.precision=bf16", "train.autocast_cache=false"], warmup=1, steps=2, rounds=1,
                 eager_cache=True)
    assert report["autocast_cache"] == {"ganforge": False, "eager": True}
    assert "autocast weight cache ganforge False, eager True" in table(report)


def test_thread_policy(monkeypatch):
    """train.threads: a number is used; auto leaves OMP_NUM_THREADS (a user's or launcher's
    choice) and GPUs alone, and otherwise takes the cores other work leaves idle, at least one."""
    from ganforge.training import device

    monkeypatch.setattr(device.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert device.choose_threads(3, "cpu") == (3, None)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert device.choose_threads("auto", "cpu") == (None, None)
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert device.choose_threads("auto", "cuda") == (None, None)
    monkeypatch.setattr(device.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    for busy, threads in ((0.2, 4), (1.3, 3), (2.6, 1), (9.0, 1)):
        monkeypatch.setattr(device, "busy_cores", lambda seconds=0.3, b=busy: b)
        chosen, note = device.choose_threads("auto", "cpu")
        assert chosen == threads and (note is None) == (threads == 4)
    assert "busy with other work; using 1 thread(s)" in note
    monkeypatch.undo()
    assert 0 <= device.busy_cores(0.05) <= (device.os.cpu_count() or 1) + 1e-6  # the real /proc/stat


def test_bench_threads_check_times_each_setting_alone_and_next_to_a_busy_process(monkeypatch):
    from ganforge.bench.threads import threads_check, threads_table

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

    from ganforge.bench.timing import count_flops
    from ganforge.contract.recipes import load_recipe

    with_r1 = count_flops(load_recipe("toy_grid", ["penalties=[{name: r1, weight: 0.1}]", "train.n_critic=2"]),
                          torch.device("cpu"))
    without = count_flops(load_recipe("toy_grid", ["penalties=[]", "train.n_critic=2"]), torch.device("cpu"))
    assert with_r1 > without > 0  # R1's double backward is counted too


def test_bench_refuses_a_system_its_bare_loop_does_not_reproduce_in_one_line(tmp_path, run_cli, mnist_dir):
    """The bare loop writes out the classic G(z)/D(x) step and StyleGAN2's: a conditional
    stylegan2 run (labels to G's mapping and D's projection) would be compared with other work.
    Refused before anything trains."""
    code, out, err = run_cli("bench", "mnist_stylegan2_cond", f"data.root={mnist_dir}", "--steps", "4", "--rounds", "2")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "objective 'stylegan2' does other work per step" in err and "samples-final" not in out


def test_the_bare_loop_writes_out_stylegan2s_step(mnist_dir):
    """`ganforge bench mnist_stylegan2` compares the engine with a bare loop doing StyleGAN2's
    work: style mixing and w_avg in both phases, R1 and path length on w when due (their FLOPs
    counted: a step with them due costs more than one without), in the recipe's precision."""
    import torch

    from ganforge.bench.loops import eager_loop
    from ganforge.bench.timing import count_flops
    from ganforge.contract.recipes import load_recipe

    small = [f"data.root={mnist_dir}", "data.batch_size=8", "generator.args.channel_max=8",
             "discriminator.args.channel_max=8", "generator.args.w_dim=16", "train.z_dim=16"]
    lazy = ["penalties=[{name: r1, weight: 0.01, every: 1}, {name: path_length, weight: 2, every: 1}]",
            "objective.args.g_reg_interval=1", "objective.args.d_reg_interval=1"]
    none = ["penalties=[]", "objective.args.g_reg_interval=0", "objective.args.d_reg_interval=0"]
    cpu = torch.device("cpu")
    info: dict = {}
    step = eager_loop(load_recipe("mnist_stylegan2", small + lazy), cpu, info)
    step()
    assert "penalties fp32" in info["work"]
    assert count_flops(load_recipe("mnist_stylegan2", small + lazy), cpu) > \
        1.5 * count_flops(load_recipe("mnist_stylegan2", small + none), cpu)  # R1 and path length: double backwards
