"""Two real CPU processes over gloo (torchrun, ACCELERATE_USE_CPU=1)."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from ganforge.contract.recipes import load_recipe

# Shared by the scripts below: train toy_grid (command-line overrides) with a test objective.
PRELUDE = textwrap.dedent("""
    import sys, torch
    from safetensors.torch import save_file
    import ganforge
    from ganforge import load_recipe
    from ganforge.training.engine import train
    from ganforge.contract.manager import get_plugin_manager
    from ganforge.plugins.objectives import Unconditional
    from ganforge.contract.system import Terms

    def train_with(objective_cls, *hooks):
        class Objectives:
            @ganforge.hookimpl
            def ganforge_register_objectives(self, register):
                register("test_objective", lambda *, loss, z_dim, sample_shape, n_critic, optim:
                         objective_cls(loss, z_dim, sample_shape, n_critic, optim))

        for i, plugin in enumerate((Objectives(), *hooks)):
            get_plugin_manager().register(plugin, name=f"test-plugin-{i}")
        state = train(load_recipe("toy_grid", sys.argv[1:] + ["objective=test_objective"]))
        acc = state.accelerator
        weights = {f"G.{k}": v for k, v in acc.unwrap_model(state.generator).state_dict().items()}
        weights.update({f"D.{k}": v for k, v in acc.unwrap_model(state.discriminator).state_dict().items()})
        return state, weights
""")

SCRIPT = PRELUDE + textwrap.dedent("""
    first = {}

    class Recording(Unconditional):
        def d_loss(self, batch):
            first.setdefault("real", self._real(batch).detach().clone())
            return super().d_loss(batch)

        def g_loss(self, batch):  # D's gradients as its own step left them
            self.before = [p.grad.clone() for p in self.D.parameters()]
            first.setdefault("frozen", []).append(not any(p.requires_grad for p in self.D.parameters()))
            return super().g_loss(batch)

    class Check:
        @ganforge.hookimpl
        def ganforge_step_end(self, state):  # after the G step (and its all-reduce)
            after = [p.grad for p in state.discriminator.parameters()]
            same = all(torch.equal(a, b) for a, b in zip(state.objective.before, after, strict=True))
            first.setdefault("untouched", []).append(same)

    state, out = train_with(Recording, Check())
    acc = state.accelerator
    out.update({f"E.{k}": v for k, v in state.ema.module.state_dict().items()})
    out["real"] = first["real"]
    out["frozen"] = torch.tensor(first["frozen"])
    if "untouched" in first:  # lifecycle hooks run on the main process
        out["untouched"] = torch.tensor(first["untouched"])
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


@pytest.mark.slow
def test_ranks_hold_identical_weights_and_drew_different_data(two_rank_run):
    out, _ = two_rank_run
    r0, r1 = load_file(str(out / "rank0.safetensors")), load_file(str(out / "rank1.safetensors"))
    for key in r0:
        if key not in ("real", "untouched"):
            assert torch.equal(r0[key], r1[key]), key
    assert not torch.equal(r0["real"], r1["real"])


@pytest.mark.slow
def test_d_gets_no_gradient_in_the_g_step_under_ddp(two_rank_run):
    out, _ = two_rank_run
    for rank in (0, 1):
        frozen = load_file(str(out / f"rank{rank}.safetensors"))["frozen"]
        assert frozen.shape == (10,) and bool(frozen.all())  # requires_grad off in every G step
    untouched = load_file(str(out / "rank0.safetensors"))["untouched"]
    assert untouched.shape == (10,) and bool(untouched.all())  # D's grads: those of its own step


@pytest.mark.slow
def test_only_rank0_writes_and_logs_are_averaged(two_rank_run):
    out, proc = two_rank_run
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss_d" in r] == [5, 10]  # one writer, not two
    assert len(list((out / "checkpoints").iterdir())) == 1
    assert proc.stdout.count("checkpoint:") == 1


@pytest.mark.slow
def test_two_rank_checkpoint_resumes_on_one_and_back(two_rank_run, tmp_path):
    out, _ = two_rank_run
    from ganforge.contract.recipes import load_recipe
    from ganforge.training.engine import train

    state = train(load_recipe("toy_grid", [f"out_dir={out}", "train.steps=14", "resume=auto", *BASE]))
    assert state.step == 14
    proc = _torchrun(tmp_path, 2, f"out_dir={out}", "train.steps=18", "resume=auto", *BASE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "step-00000018" in {p.name for p in (out / "checkpoints").iterdir()}


def test_second_run_on_the_same_folder_is_refused(tmp_path):
    from ganforge.training.launch import RunLock
    from ganforge.errors import GanforgeError

    with RunLock(tmp_path):
        with pytest.raises(GanforgeError, match="is in use by another run"):
            RunLock(tmp_path).__enter__()
    with RunLock(tmp_path):  # released: usable again
        pass


EQUIV_SCRIPT = PRELUDE + textwrap.dedent("""
    class DataNoise(Unconditional):
        # noise derived from the real batch, so that 2 ranks x B and 1 process x 2B see the
        # same (data, noise) pairs whatever each rank's RNG does
        def d_loss(self, batch):
            real = self._real(batch)
            fake = self.G(real.flip(1) * 0.7).detach()
            r, f = self.D(real), self.D(fake)
            return Terms(self.loss.d_loss(r, f), judged={"D": (real, fake)})

        def g_loss(self, batch):
            real = self._real(batch)
            return Terms(self.loss.g_loss(self.D(self.G(real.flip(1) * 0.7))))

    state, out = train_with(DataNoise)
    if state.accelerator.is_main_process:
        save_file({k: v.contiguous() for k, v in out.items()}, f"{state.output_dir}/weights.safetensors")
""")


@pytest.mark.slow
@pytest.mark.parametrize("accumulate", [1, 2])
def test_two_ranks_batch_b_match_one_process_batch_2b(tmp_path, accumulate):
    """Model without BatchNorm, mean-reduced loss (+ lazy R1): DDP averages the gradients,
    so 2 ranks x B must train exactly like 1 process x 2B (up to float rounding); also with
    each rank's batch in 2 micro-batches (train.accumulate: no all-reduce until the last)."""
    script = tmp_path / "equiv.py"
    script.write_text(EQUIV_SCRIPT)
    common = ["log.progress=false", "metrics=[]", "log.sample_every=0", "train.ema=0", "train.steps=8",
              "data.args={n: 4096}", "penalties=[{name: r1, weight: 0.1, every: 2}]", "train.n_critic=2"]
    env = dict(os.environ, ACCELERATE_USE_CPU="1", WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(script), f"out_dir={tmp_path / 'two'}", "data.batch_size=32",
                          f"train.accumulate={accumulate}", *common],
                         env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, str(script), f"out_dir={tmp_path / 'one'}", "data.batch_size=64", *common],
                         env=dict(env, ACCELERATE_USE_CPU="0"), capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    a = load_file(str(tmp_path / "two" / "weights.safetensors"))
    b = load_file(str(tmp_path / "one" / "weights.safetensors"))
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-5, worst
    # the initial weights, built as the engine builds them: training moved the weights far
    # more than the tolerance, so the comparison is not vacuous
    from accelerate.utils import set_seed
    from ganforge.contract.recipes import load_recipe
    from ganforge.training.build import build_networks, build_system
    from ganforge.contract.manager import PluginManager

    set_seed(0)
    registry, recipe = PluginManager().registry, load_recipe("toy_grid")
    G0 = build_networks(recipe, registry, build_system(recipe, registry, (2,)))["G"]
    moved = max((a[f"G.{k}"] - v).abs().max().item() for k, v in G0.state_dict().items())
    assert moved > 1e-3, moved
    # logged losses are averaged over ranks: the same numbers as the single process logs
    logs = [json.loads((tmp_path / run / "metrics.jsonl").read_text().splitlines()[-1]) for run in ("two", "one")]
    for key in ("loss_d", "loss_g", "penalty_r1"):
        assert abs(logs[0][key] - logs[1][key]) < 1e-5, (key, logs)


PENALTY_SCRIPT = textwrap.dedent("""
    import sys, torch
    from accelerate import Accelerator
    from ganforge.contract.manager import get_plugin_manager

    acc = Accelerator(cpu=True)
    rank, world = acc.process_index, acc.num_processes
    reg = get_plugin_manager().registry
    torch.manual_seed(0)
    D = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    reference = [p.detach().clone() for p in D.parameters()]
    opt = torch.optim.SGD(D.parameters(), lr=0.0)
    D, opt = acc.prepare(D, opt)

    def inputs(r):  # each rank's real and fake batch (different per rank)
        g = torch.Generator().manual_seed(100 + r)
        return torch.randn(8, 2, generator=g), torch.randn(8, 2, generator=g)

    results = {}
    for name in ("r1", "gp"):
        penalty = reg.build("penalty", name)
        D.zero_grad()
        torch.manual_seed(1000 + rank)  # GP's interpolation weights
        real, fake = inputs(rank)
        # as in the engine, the penalty is added to a D loss that uses every parameter (here
        # one with zero weight): DDP needs every parameter in the graph
        acc.backward(penalty(D, real, fake) + 0.0 * D(real).sum())
        # (a parameter the penalty does not depend on, like the last bias, gets no gradient)
        ddp_grads = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in D.parameters()]
        # manual: the same penalty on a plain copy of D for each rank's batch, averaged
        manual = [torch.zeros_like(p) for p in reference]
        for r in range(world):
            plain = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
            with torch.no_grad():
                for p, q in zip(plain.parameters(), reference):
                    p.copy_(q)
            torch.manual_seed(1000 + r)
            grads = torch.autograd.grad(penalty(plain, *inputs(r)), list(plain.parameters()),
                                        allow_unused=True, materialize_grads=True)
            manual = [m + g / world for m, g in zip(manual, grads)]
        results[name] = max((a - b).abs().max().item() for a, b in zip(ddp_grads, manual))
        results[name + "_scale"] = max(m.abs().max().item() for m in manual)
    # one write per line: print() writes the text and the newline separately, and the two
    # ranks share one pipe, so their lines could run together
    sys.stdout.write(f"RESULT {rank} {results}\\n")
    sys.stdout.flush()
""")


@pytest.mark.slow
def test_penalties_give_the_gradient_averaged_over_ranks(tmp_path):
    script = tmp_path / "penalty.py"
    script.write_text(PENALTY_SCRIPT)
    env = dict(os.environ, ACCELERATE_USE_CPU="1", WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT")]
    assert len(lines) == 2
    for line in lines:
        results = eval(line.split(" ", 2)[2])  # a dict printed by our own script
        for name in ("r1", "gp"):
            assert results[f"{name}_scale"] > 1e-3  # a real gradient to compare
            assert results[name] < 1e-6, (name, results)


def test_sync_batchnorm_needs_a_gpu(tmp_path, run_cli):
    code, _, err = run_cli("train", "toy_grid", f"out_dir={tmp_path}", "train.sync_bn=true")
    assert code == 2 and "train.sync_bn needs CUDA GPUs" in err


NAN_SCRIPT = textwrap.dedent("""
    import os, sys
    import ganforge
    from ganforge import load_recipe
    from ganforge.training.engine import train
    from ganforge.contract.manager import get_plugin_manager
    from ganforge.plugins.losses import BCE

    rank, calls = int(os.environ["RANK"]), [0]

    class OnlyRank1(BCE):
        def d_loss(self, real, fake):  # NaN on rank 1's third D loss only
            calls[0] += 1
            value = super().d_loss(real, fake)
            return value * float("nan") if rank == 1 and calls[0] == 3 else value

    class Plugin:
        @ganforge.hookimpl
        def ganforge_register_losses(self, register):
            register("nan_on_rank1", OnlyRank1)

    get_plugin_manager().register(Plugin(), name="nan-rank1")
    state = train(load_recipe("toy_grid", sys.argv[1:]))
    sys.stdout.write(f"RESULT {rank} {state.skipped} {state.step}\\n")
""")


@pytest.mark.slow
@pytest.mark.parametrize("fused", ["false", "true"])
def test_a_nonfinite_loss_on_one_rank_is_skipped_on_every_rank(tmp_path, fused):
    """Rank 1 alone sees a NaN: both ranks skip that step (one all-reduce of the flag), so DDP's
    all-reduces stay in step (without it gloo fails with a size mismatch; NCCL hangs). With
    fused Adam (a GPU's default) the skip goes through found_inf with no host read: every rank
    still runs every backward and skips the same updates."""
    script = tmp_path / "nan.py"
    script.write_text(NAN_SCRIPT)
    env = dict(os.environ, ACCELERATE_USE_CPU="1", WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), f"out_dir={tmp_path / 'run'}", "loss=nan_on_rank1", "train.steps=6",
                           f"optim.fused={fused}",
                           "data.args={n: 2048}", "data.batch_size=32", "log.every=3", "log.progress=false",
                           "metrics=[]", "log.sample_every=0"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = sorted(line.split()[1:] for line in proc.stdout.splitlines() if line.startswith("RESULT"))
    assert results == [["0", "1", "6"], ["1", "1", "6"]]
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["skipped"] == 1 and "NaN" not in json.dumps(rows)


SIGNAL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import ganforge
    from ganforge import load_recipe
    from ganforge.training.engine import train
    from ganforge.contract.manager import get_plugin_manager
    from ganforge.plugins.losses import BCE

    rank, calls = int(os.environ["RANK"]), [0]
    ranks = [int(r) for r in os.environ.get("SIGNAL_RANKS", "").split(",") if r]

    class Preempted(BCE):
        def d_loss(self, real, fake):  # SIGTERM to this process during its third D loss
            calls[0] += 1
            if rank in ranks and calls[0] == 3:
                os.kill(os.getpid(), signal.SIGTERM)
            return super().d_loss(real, fake)

    class Plugin:
        @ganforge.hookimpl
        def ganforge_register_losses(self, register):
            register("preempted", Preempted)

    get_plugin_manager().register(Plugin(), name="preempted")
    state = train(load_recipe("toy_grid", sys.argv[1:]))
    sys.stdout.write(f"RESULT {rank} {state.step} {state.interrupted}\\n")
""")


def _signal_run(tmp_path, out, ranks, *args):
    script = tmp_path / "preempt.py"
    script.write_text(SIGNAL_SCRIPT)
    env = dict(os.environ, ACCELERATE_USE_CPU="1", WANDB_MODE="disabled", OMP_NUM_THREADS="1", SIGNAL_RANKS=ranks)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), f"out_dir={out}", "loss=preempted", "train.steps=6", "data.args={n: 2048}",
                           "data.batch_size=32", "log.every=2", "log.progress=false", "metrics=[]",
                           "log.sample_every=0", "train.ema=0.9", *args],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sorted(line.split()[1:] for line in proc.stdout.splitlines() if line.startswith("RESULT"))


def _files(folder):
    return {f.stem: load_file(str(f)) for f in sorted(folder.glob("*.safetensors"))}


@pytest.mark.slow
@pytest.mark.parametrize("ranks", ["0,1", "1"])
def test_sigterm_on_any_rank_stops_every_rank_after_one_step_with_one_checkpoint(tmp_path, ranks):
    """Preemption: SIGTERM on both processes (what SLURM and Kubernetes send), or on rank 1
    alone. Every rank finishes the same step, one checkpoint is written, and resume=auto then
    ends bitwise where an uninterrupted run ends."""
    assert _signal_run(tmp_path, tmp_path / "whole", "") == [["0", "6", "None"], ["1", "6", "None"]]
    # signalled during step 3; the ranks' flags are shared without a device sync, collected
    # one step later: every rank stops after step 4
    assert _signal_run(tmp_path, tmp_path / "parts", ranks) == [["0", "4", "SIGTERM"], ["1", "4", "SIGTERM"]]
    assert sorted(p.name for p in (tmp_path / "parts" / "checkpoints").iterdir()) == ["step-00000004"]
    assert not (tmp_path / "parts" / "samples-final.png").exists()
    assert _signal_run(tmp_path, tmp_path / "parts", "", "resume=auto") == [["0", "6", "None"], ["1", "6", "None"]]
    whole = _files(tmp_path / "whole" / "checkpoints" / "step-00000006")
    parts = _files(tmp_path / "parts" / "checkpoints" / "step-00000006")
    assert whole.keys() == parts.keys() and {"rng-rank0", "rng-rank1"} <= set(whole)
    for name in whole:
        for key in whole[name]:
            assert torch.equal(whole[name][key], parts[name][key]), f"{name}/{key}"


def test_the_launchers_mixed_precision_is_followed_under_auto_and_reported_otherwise(monkeypatch):
    """accelerate launch --mixed_precision bf16 sets ACCELERATE_MIXED_PRECISION: auto follows it,
    an explicit recipe setting wins with a warning, 'no' (every config's default) leaves the
    recipe to decide, and a value accelerate does not know is one clear error."""
    from ganforge.training.precision import launcher_precision
    from ganforge.errors import ConfigError

    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    assert launcher_precision("auto") == "bf16"
    with pytest.warns(UserWarning, match="launcher asks for --mixed_precision bf16 but the recipe's"):
        assert launcher_precision("no") is None
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    assert launcher_precision("auto") is None and launcher_precision("bf16") is None
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp8")
    with pytest.raises(ConfigError, match="fp8 .* is not one of no, bf16, fp16"):
        launcher_precision("auto")


def test_sync_bn_converts_every_batchnorm_network_but_the_penalised_ones():
    """SyncBatchNorm has no double backward, and R1/GP differentiate D twice (issue #27): a
    penalised network keeps per-process BatchNorm, with the reason; the others are synced
    (BigGAN syncs its generator's)."""
    from ganforge.training.build import build_networks, build_system, sync_bn_split
    from ganforge.contract.manager import get_plugin_manager

    registry = get_plugin_manager().registry
    # mnist_dcgan: BatchNorm in G and in D (norm: batch)
    for penalties, convert, kept in (("[]", ["D", "G"], []), ("[{name: r1}]", ["G"], ["D"]),
                                     ("[{name: gp, networks: [D]}]", ["G"], ["D"])):
        recipe = load_recipe("mnist_dcgan", [f"penalties={penalties}", "generator.args.ngf=4", "discriminator.args.ndf=4"])
        system = build_system(recipe, registry, (1, 28, 28), None)
        nets = build_networks(recipe, registry, system)
        got_convert, got_kept = sync_bn_split(recipe, system, nets)
        assert sorted(got_convert) == convert and sorted(got_kept) == kept, penalties
        for why in got_kept.values():
            assert why.endswith("differentiates it twice and SyncBatchNorm has no double backward")
    recipe = load_recipe("toy_grid", ["generator.args.batchnorm=false"])  # no BatchNorm anywhere
    system = build_system(recipe, registry, (2,), None)
    assert sync_bn_split(recipe, system, build_networks(recipe, registry, system)) == ([], {})


COUNT_SCRIPT = PRELUDE + textwrap.dedent("""
    import json
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    counts = {}

    class CountAllReduces:
        @ganforge.hookimpl
        def ganforge_train_start(self, state):  # every rank: each network's gradient buckets, counted
            for name, net in state.nets.items():
                def hook(process_group, bucket, name=name):
                    counts[name] = counts.get(name, 0) + 1
                    return default_hooks.allreduce_hook(process_group, bucket)
                net.register_comm_hook(None, hook)

    state, _ = train_with(Unconditional, CountAllReduces())
    sys.stdout.write(f"COUNTS {state.accelerator.process_index} {json.dumps(counts, sort_keys=True)}\\n")
    sys.stdout.flush()
""")


@pytest.mark.slow
def test_accumulation_all_reduces_once_per_update(tmp_path):
    """train.accumulate=4: DDP decides in the forward whether a backward all-reduces, so every
    micro-batch but the last runs its forward and backward inside no_sync, and a frozen
    network's forward (D's in G's phase) always does (else the next phase's first micro-batch
    all-reduced early). Counted with a DDP communication hook: as many all-reduces as with one
    micro-batch (before: 4 per update; then 5 instead of 3 in 3 steps)."""
    script = tmp_path / "count.py"
    script.write_text(COUNT_SCRIPT)
    env = dict(os.environ, ACCELERATE_USE_CPU="1", WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    found = {}
    for accumulate in (1, 4):
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                               str(script), f"out_dir={tmp_path / str(accumulate)}", "train.steps=3",
                               "log.progress=false", "metrics=[]", "log.sample_every=0", "data.args={n: 1024}",
                               "data.batch_size=32", f"train.accumulate={accumulate}"],
                              env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        lines = [line.split(" ", 2) for line in proc.stdout.splitlines() if line.startswith("COUNTS 0 ")]
        assert len(lines) == 1, proc.stdout[-2000:]  # (lifecycle hooks run on the main process)
        found[accumulate] = json.loads(lines[0][2])
    one, four = found[1], found[4]
    assert one["D"] >= 3 and one["G"] >= 3  # 3 steps: at least one all-reduce per update
    assert four == one, (four, one)


ADA_SCRIPT = textwrap.dedent("""
    import sys, json, torch
    from ganforge import load_recipe
    from ganforge.training.engine import train

    state = train(load_recipe("mnist_dcgan", sys.argv[1:]))
    stats = state.augment.augment.stats.tolist()
    sys.stdout.write(f"STATS {state.accelerator.process_index} {json.dumps(stats)}\\n")
    sys.stdout.flush()
""")


@pytest.mark.slow
def test_each_rank_s_ada_statistics_are_checkpointed_and_restored(tmp_path):
    """ADA's statistics since its last update are each rank's own; a checkpoint kept rank 0's
    only, and on resume every rank restored rank 0's partial counts. Now every rank's are kept."""
    from conftest import make_mnist_like

    data = make_mnist_like(tmp_path / "mnist", n=256)
    script = tmp_path / "ada.py"
    script.write_text(ADA_SCRIPT)
    env = dict(os.environ, ACCELERATE_USE_CPU="1", WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), f"data.root={data}", f"out_dir={out}", "train.steps=3",
                           "augment={name: ada, args: {interval: 100}}", "data.batch_size=8",
                           "generator.args.ngf=4", "discriminator.args.ndf=4", "log.progress=false", "metrics=[]",
                           "log.sample_every=0", "log.film_every=0", "log.animate=false"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    live = {int(r): json.loads(v) for _, r, v in
            (line.split(" ", 2) for line in proc.stdout.splitlines() if line.startswith("STATS "))}
    folder = out / "checkpoints" / "step-00000003"
    saved = {0: load_file(str(folder / "augment.safetensors"))["stats"].tolist(),
             1: load_file(str(folder / "augment-rank1.safetensors"))["stats"].tolist()}
    assert saved == live and live[0][1] == live[1][1] == 3 * 8  # 3 D steps of 8 reals on each rank


@pytest.mark.slow
def test_an_error_every_rank_meets_is_printed_once(tmp_path):
    """Issue #35: under a launcher each rank printed ganforge's line (twice with 2 processes).
    A recipe's error is printed by rank 0 alone; torchrun's own failure report follows it (the
    launcher's, which a child process cannot silence)."""
    env = dict(os.environ, ACCELERATE_USE_CPU="1", WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "ganforge", "train", "toy_grid", f"out_dir={tmp_path / 'run'}", "train.stepz=3"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert proc.stderr.count("Unknown recipe key 'train.stepz'") == 1, proc.stderr[-3000:]
