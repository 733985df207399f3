"""The fast path (ganforge.training.step, graph mode): the step a GPU captures in a CUDA graph, run
here on the CPU without capture, must train exactly the model the eager step trains.

Both runs use fused Adam (``optim.fused=true``) so that the optimizer kernel is the same one;
the fast path is forced on the CPU by declaring that nothing stands against it.
"""
import json

import pytest
import torch

import ganforge
from safetensors.torch import load_file

from ganforge.training import capture, engine
from ganforge.contract.recipes import load_recipe
from ganforge.training.engine import train
from ganforge.errors import ConfigError, GanforgeError
from ganforge.contract.manager import PluginManager

from test_reliability import NaNLoss, _InterruptAt

QUICK = ["log.progress=false", "metrics=[]", "log.sample_every=0", "optim.fused=true"]
# toy MLP: 2 D steps per G step, lazy R1 every 3rd D step (so the pattern of penalised D steps
# changes from step to step), EMA starting at step 5, 1000 points in batches of 64: 15 batches
# an epoch, so 40 steps cross 5 epoch boundaries
TOY = ["train.steps=40", "train.n_critic=2", "data.args.n=1000", "data.batch_size=64",
       "penalties=[{name: r1, weight: 0.1, every: 3}]", "train.ema=0.9", "train.ema_start=5",
       "log.every=10", "log.checkpoint_every=20", *QUICK]


def _train(tmp_path, monkeypatch, graph, recipe, overrides, plugins=None):
    with monkeypatch.context() as m:
        if graph:  # the CPU has no CUDA graphs: run the function that would be captured
            m.setattr(engine, "reasons_against", lambda state, penalties: [])
        # (parity needs one autocast cast policy: the graph path cannot cache weight casts)
        state = train(load_recipe(recipe, [f"out_dir={tmp_path}", "train.autocast_cache=false", *overrides]),
                      plugins=plugins)
    assert state.stepper.graph is graph
    assert not state.stepper.graphs  # nothing captured on a CPU
    return state


def _checkpoint(folder):
    return {f.stem: load_file(str(f)) for f in sorted(folder.glob("*.safetensors"))}


def _rows(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _assert_same_run(a, b, out_a, out_b):
    for field in ("step", "d_steps", "epoch", "batch_in_epoch", "skipped"):
        assert getattr(a, field) == getattr(b, field), field
    ckpts_a = sorted((out_a / "checkpoints").iterdir())
    ckpts_b = sorted((out_b / "checkpoints").iterdir())
    assert [c.name for c in ckpts_a] == [c.name for c in ckpts_b] and len(ckpts_a) >= 2
    for ca, cb in zip(ckpts_a, ckpts_b, strict=True):  # weights, EMA, Adam moments, RNG
        ta, tb = _checkpoint(ca), _checkpoint(cb)
        assert ta.keys() == tb.keys()
        for name in ta:
            assert ta[name].keys() == tb[name].keys(), name
            for key in ta[name]:
                assert torch.equal(ta[name][key], tb[name][key]), f"{ca.name}/{name}/{key}"
    rows_a = [{k: v for k, v in r.items() if k != "images_per_s"} for r in _rows(out_a)]
    rows_b = [{k: v for k, v in r.items() if k != "images_per_s"} for r in _rows(out_b)]
    assert rows_a == rows_b  # the same logged losses, D(x), penalties, epochs


SCHEDULES = {
    "none": ["optim.lr_decay=none"],
    "linear": ["optim.lr_decay=linear"],
    "linear-from-20": ["optim.lr_decay=linear", "optim.lr_decay_start=20"],
    # AdamW, a cosine schedule after a warm-up, and clipping (the norm is logged on both paths)
    "adamw-cosine-clip": ["optim.lr_decay=none", "optim.type=adamw", "optim.weight_decay=0.01",
                          "optim.schedule={type: cosine, warmup: 5, final: 0.1}", "optimizers.D.clip=0.5"],
    "exponential-per-epoch": ["optim.lr_decay=none", "optim.schedule={type: exponential, gamma: 0.8, per: epoch}"],
    "ema-rampup": ["train.ema_rampup=0.05"],  # the EMA's decay changes every step (a tensor on the graph path)
    # R1's weight ramped (a device tensor on the graph path, as R3GAN's gamma), R2 beside it
    "ramped-penalty-weight": ["loss=relativistic", "penalties=[{name: r1, weight: {initial: 1.0, final: 0.01}, every: 3}, "
                              "{name: r2, weight: {initial: 0.5, final: 0.0, type: linear, stop: 0.5}}]"],
}


@pytest.mark.parametrize("decay", list(SCHEDULES))
def test_graph_step_trains_the_same_model_as_the_eager_step(tmp_path, monkeypatch, decay):
    overrides = [*TOY, *SCHEDULES[decay]]
    eager = _train(tmp_path / "eager", monkeypatch, False, "toy_grid", overrides)
    graph = _train(tmp_path / "graph", monkeypatch, True, "toy_grid", overrides)
    _assert_same_run(eager, graph, tmp_path / "eager", tmp_path / "graph")
    assert "penalty_r1" in _rows(tmp_path / "graph")[0]
    if "clip" in decay:
        assert all(r["grad_norm_d"] > 0 for r in _rows(tmp_path / "graph"))
    # and it learned something: the losses moved
    assert len({r["loss_d"] for r in _rows(tmp_path / "graph")}) > 1


@pytest.mark.parametrize("precision", ["no", "bf16", "auto-as-on-amx"])
def test_graph_step_matches_eager_for_a_conv_gan_with_batchnorm(tmp_path, monkeypatch, mnist_dir, precision):
    """In every precision, whatever the CPU: bf16 forced explicitly, and precision=auto as a CPU
    with native bf16 (AMX) resolves it, so an AVX2 machine runs the AMX machines' code path
    (both steps autocast with the same weight-cache policy: issue #27 found them apart)."""
    if precision == "auto-as-on-amx":
        monkeypatch.setattr("ganforge.training.precision.native_cpu_bf16", lambda: True)
    overrides = [f"data.root={mnist_dir}", "data.batch_size=32", "generator.args.ngf=8",
                 "discriminator.args.ndf=8", "train.steps=12", "train.ema=0.5", "log.every=4",
                 f"train.precision={precision.split('-')[0]}", "log.checkpoint_every=6", *QUICK]
    eager = _train(tmp_path / "eager", monkeypatch, False, "mnist_dcgan", overrides)
    graph = _train(tmp_path / "graph", monkeypatch, True, "mnist_dcgan", overrides)
    assert eager.accelerator.mixed_precision == ("no" if precision == "no" else "bf16")
    _assert_same_run(eager, graph, tmp_path / "eager", tmp_path / "graph")


@pytest.mark.parametrize("setting", ["auto", "true", "false"])
def test_the_autocast_weight_cache_is_on_for_the_eager_step_only_by_default(tmp_path, monkeypatch, setting):
    """train.autocast_cache: the eager step reuses each weight's bf16 copy within a loss (torch's
    default; 3.5% faster on mnist_seed here, RESULTS), the graph path cannot (a capture must
    not hold cached casts); true/false force it. The policy is a keyword of the step's autocast."""
    overrides = ["data.args.n=512", "data.batch_size=32", "train.steps=2", "train.precision=bf16",
                 f"train.autocast_cache={setting}", *QUICK]
    for graph in (False, True) if setting != "true" else (False,):
        with monkeypatch.context() as m:
            if graph:
                m.setattr(engine, "reasons_against", lambda state, penalties: [])
            state = train(load_recipe("toy_grid", [f"out_dir={tmp_path / str(graph)}", *overrides]))
        expected = {"auto": not graph, "true": True, "false": False}[setting]
        assert state.stepper.graph is graph and state.autocast.keywords["cache_enabled"] is expected
    from ganforge.training.capture import reasons_against

    forced = "train.autocast_cache=true: a captured step cannot hold" in "; ".join(reasons_against(state, []))
    assert forced is (setting == "true")  # true keeps a GPU run on the eager step


@pytest.mark.parametrize("augment", ["diffaugment", "{name: ada, args: {interval: 2, kimg: 0.1}}"])
def test_graph_step_matches_eager_with_an_augmentation(tmp_path, monkeypatch, mnist_dir, augment, precision):
    """The augmentation's random draws, ADA's p (updated between steps) and R1 through it, in
    fp32 and under bf16 autocast."""
    overrides = [f"data.root={mnist_dir}", "data.batch_size=16", "generator.args.ngf=4", "discriminator.args.ndf=4",
                 "train.steps=8", "log.every=4", "log.checkpoint_every=4", f"augment={augment}",
                 "penalties=[{name: r1, every: 2}]", precision.recipe, *QUICK]
    eager = _train(tmp_path / "eager", monkeypatch, False, "mnist_dcgan", overrides)
    graph = _train(tmp_path / "graph", monkeypatch, True, "mnist_dcgan", overrides)
    _assert_same_run(eager, graph, tmp_path / "eager", tmp_path / "graph")
    if "ada" in augment:
        assert torch.equal(eager.augment.augment.p, graph.augment.augment.p) and graph.augment.augment.p > 0


def test_graph_step_matches_eager_for_the_infogan_objective(tmp_path, monkeypatch, mnist_dir):
    """The InfoGAN code (one-hot by scatter, no host sync) and the Q head on the fast path."""
    overrides = [f"data.root={mnist_dir}", "data.batch_size=32", "generator.args.ngf=8",
                 "discriminator={name: dcgan, args: {ndf: 8, norm: none, codes: 10}}",
                 "objective={name: infogan, args: {codes: 10}}", "penalties=[{name: r1, every: 2}]",
                 "train.steps=8", "log.every=4", "log.checkpoint_every=4", *QUICK]
    eager = _train(tmp_path / "eager", monkeypatch, False, "mnist_dcgan", overrides)
    graph = _train(tmp_path / "graph", monkeypatch, True, "mnist_dcgan", overrides)
    _assert_same_run(eager, graph, tmp_path / "eager", tmp_path / "graph")
    assert "info_ce" in _rows(tmp_path / "graph")[0]


@pytest.mark.parametrize("first", ["graph", "eager"])
def test_graph_step_resumes_exactly(tmp_path, monkeypatch, first):
    """Stopped by SIGINT at step 17 (mid-epoch) on either path and resumed on the fast path =
    one uninterrupted eager run (linear learning-rate decay on)."""
    overrides = [*TOY, "optim.lr_decay=linear"]
    eager = _train(tmp_path / "eager", monkeypatch, False, "toy_grid", overrides)
    pm = PluginManager()
    pm.register(_InterruptAt(17), name="interrupt")
    stopped = _train(tmp_path / "graph", monkeypatch, first == "graph", "toy_grid", overrides, plugins=pm)
    assert stopped.step == 17
    resumed = _train(tmp_path / "graph", monkeypatch, True, "toy_grid", [*overrides, "resume=auto"])
    assert resumed.step == eager.step == 40
    final_e = _checkpoint(tmp_path / "eager" / "checkpoints" / "step-00000040")
    final_g = _checkpoint(tmp_path / "graph" / "checkpoints" / "step-00000040")
    for name in ("model.G", "model.D", "ema.G", "optim.G", "optim.D"):
        for key in final_e[name]:
            assert torch.equal(final_e[name][key], final_g[name][key]), f"{name}/{key}"


def test_graph_step_skips_nonfinite_updates_and_counts_them(tmp_path, monkeypatch):
    pm = PluginManager()
    pm.register(NaNLoss({3, 4}), name="nan")
    state = _train(tmp_path, monkeypatch, True, "toy_grid",
                   ["loss=flaky", "train.steps=8", "log.every=4", *QUICK], plugins=pm)
    assert state.skipped == 2 and state.step == 8
    rows = _rows(tmp_path)
    assert rows[0]["skipped"] == 2 and all(json.dumps(r).count("NaN") == 0 for r in rows)
    for tensors in _checkpoint(tmp_path / "checkpoints" / "step-00000008").values():
        assert all(torch.isfinite(v).all() for v in tensors.values() if v.is_floating_point())


def test_graph_step_stops_on_a_run_of_nonfinite_losses(tmp_path, monkeypatch):
    pm = PluginManager()
    pm.register(NaNLoss(set(range(3, 100))), name="nan")
    # the fast path learns of them when it next logs (no synchronisation per step)
    with pytest.raises(GanforgeError, match=r"stopped at step 5: non-finite losses \(3 in a row\)"):
        _train(tmp_path, monkeypatch, True, "toy_grid",
               ["loss=flaky", "train.steps=50", "train.max_nonfinite=3", "log.every=5", *QUICK],
               plugins=pm)


def test_cuda_graph_true_where_it_cannot_be_captured_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError) as err:
        train(load_recipe("toy_grid", [f"out_dir={tmp_path}", "train.cuda_graph=true",
                                       "train.steps=2", *QUICK]))
    assert "the device is cpu, not a CUDA GPU" in str(err.value)
    assert "train.cuda_graph=auto" in str(err.value)
    assert not (tmp_path / "checkpoints").exists()  # refused before anything was written


def test_reasons_name_the_parts_that_are_not_capturable(tmp_path):
    from types import SimpleNamespace

    from ganforge.contract.system import Optimizer

    recipe = load_recipe("toy_grid", ["loss=hinge", "penalties=[{name: gp}]", "optimizers.D.type=sgd"])
    dataset = SimpleNamespace(data=[1, 2])  # not a tensor: read by workers, say
    opts = {"G": Optimizer(["G"]), "D": Optimizer(["D"])}
    system = SimpleNamespace(loss=SimpleNamespace(), capturable=False, optimizers=opts)
    acc = SimpleNamespace(device=torch.device("cpu"), num_processes=2, mixed_precision="fp16")
    state = SimpleNamespace(config=recipe, accelerator=acc, dataset=dataset, system=system)
    penalty = (recipe.penalties[0], object())
    reasons = capture.reasons_against(state, [penalty])
    text = "; ".join(reasons)
    for part in ("not a CUDA GPU", "2 processes", "fp16 needs a GradScaler", "dataset 'toy_grid'", "loss 'hinge'",
                 "objective 'unconditional'", "penalty 'gp'", "optimizer D is SGD"):
        assert part in text, part
    assert "optimizer G" not in text  # Adam can be captured
    from ganforge.plugins.losses import BCE
    from ganforge.training.capture import declares_capturable

    class MyBCE(BCE):  # may do anything: it does not inherit BCE's promise
        def d_loss(self, real, fake):
            return super().d_loss(real, fake) * float(real.mean())  # a host synchronisation

    class Promised(MyBCE):
        capturable = True

    assert declares_capturable(BCE()) and not declares_capturable(MyBCE()) and declares_capturable(Promised())
    system = SimpleNamespace(loss=MyBCE(), capturable=True, optimizers=opts)
    state = SimpleNamespace(config=recipe,
                            accelerator=acc, dataset=dataset, system=system)
    assert "does not declare capturable" in "; ".join(capture.reasons_against(state, []))


@pytest.mark.cpu_detection  # (tests the detection itself: GANFORGE_TEST_AS_AMX leaves it alone)
def test_precision_auto_is_bf16_only_for_images_on_native_bf16_hardware(monkeypatch, tmp_path, mnist_dir):
    from ganforge.training.precision import resolve_precision

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", "cuda", (3, 64, 64)) == "bf16"
    assert resolve_precision("auto", "cuda", (2,)) == "no"  # 2-D points: bf16 cannot resolve them
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert resolve_precision("auto", "cpu", (3, 64, 64)) == "no"  # emulated bf16: slow
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert resolve_precision("auto", "cpu", (3, 64, 64)) == "bf16"
    assert resolve_precision("auto", "cpu", (2,)) == "no"
    assert resolve_precision("fp16", "cpu", (2,)) == "fp16"  # explicit settings are kept
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_precision("auto", "cuda", (1, 28, 28)) == "no"
    monkeypatch.undo()
    for native, expected in ((False, "no"), (True, "bf16")):  # an AVX2 CPU, then an AMX one
        monkeypatch.setattr("ganforge.training.precision.native_cpu_bf16", lambda native=native: native)
        state = train(load_recipe("mnist_dcgan", [f"out_dir={tmp_path / expected}", f"data.root={mnist_dir}",
                                                  "train.steps=1", "generator.args.ngf=8",
                                                  "discriminator.args.ndf=8", *QUICK]))
        assert state.config.train.precision == "auto" and state.accelerator.mixed_precision == expected


def test_graph_step_matches_eager_for_pix2pix(tmp_path, monkeypatch):
    """pix2pix declares itself capturable: the U-Net (dropout, BatchNorm) and the PatchGAN on
    pairs fetched from the in-memory mnist_edges demo train the same model on both paths."""
    from conftest import make_mnist_like

    digits = make_mnist_like(make_mnist_like(tmp_path / "mnist", n=64), n=16, split="test")
    overrides = [f"data.root={digits}", "data.batch_size=4", "generator.args={ngf: 4}",
                 "discriminator.args={ndf: 4, n_layers: 1}", "train.steps=6", "log.every=3",
                 "log.checkpoint_every=3", "penalties=[{name: r1, weight: 1, every: 2}]", *QUICK]
    eager = _train(tmp_path / "eager", monkeypatch, False, "mnist_edges_pix2pix", overrides)
    graph = _train(tmp_path / "graph", monkeypatch, True, "mnist_edges_pix2pix", overrides)
    _assert_same_run(eager, graph, tmp_path / "eager", tmp_path / "graph")
    assert "g_l1" in _rows(tmp_path / "graph")[0]


class _HostSync(RuntimeError):
    pass


@pytest.fixture
def no_host_sync(monkeypatch):
    """Inside the fast path's step, any read of a tensor's value by Python (.item(), bool(),
    float(), .tolist(): what a CUDA graph cannot capture) raises, in every step; from a
    pattern's second run on (the runs a GPU captures) so does host data copied to the device
    (torch.tensor of Python data, .to(device)): the engine's own HostTraffic, strict on a CPU."""
    from ganforge.training import step
    from ganforge.training.capture import HostTraffic

    original = step.TrainStep._step

    def guarded(self, pattern):
        with HostTraffic(strict=True).watch(self.plain) as watch:
            result = original(self, pattern)
        found = [f for f in watch.found if pattern in self.seen or "reads" in f]
        if found:
            raise _HostSync(found[0])
        return result

    monkeypatch.setattr(step.TrainStep, "_step", guarded)
    monkeypatch.setattr(engine, "reasons_against", lambda state, penalties: [])


CAPTURABLE_RUNS = {  # every built-in part that declares capturable = True, in a run that uses it
    "losses and penalties": [(loss, "toy_grid", [f"loss={loss}", "penalties=[{name: r1}, {name: r2}, {name: gp, every: 2}, {name: path_length, every: 2}]",
                                                  "train.ema=0.9"])
                             for loss in ("bce", "hinge", "lsgan", "minimax", "wgan", "relativistic", "rpgan")],
    "objectives": [("infogan", "mnist_dcgan", ["generator.args.ngf=4", "discriminator={name: dcgan, args: "
                                               "{ndf: 4, norm: none, codes: 10}}", "objective={name: infogan}"]),
                   ("conditional", "mnist_cgan", ["generator.args={ngf: 4, fc: 16}",
                                                  "discriminator.args={ndf: 4, fc: 16}"]),
                   # labels drawn with the data's frequencies: their CDF is on the device before
                   # the step (issue #27: it was copied from the host inside the captured step)
                   ("conditional-data-labels", "mnist_cgan", ["generator.args={ngf: 4, fc: 16}",
                                                              "discriminator.args={ndf: 4, fc: 16}",
                                                              "objective.args.labels=data"]),
                   ("acgan", "mnist_cgan", ["objective=acgan", "generator.args={ngf: 4, fc: 16}",
                                            "discriminator={name: infogan, args: {ndf: 4, fc: 16, norm: none}}"]),
                   ("pix2pix", "mnist_edges_pix2pix", ["generator.args={ngf: 4}",
                                                       "discriminator.args={ndf: 4, n_layers: 1}"]),
                   # style mixing (a crossover drawn on the device), w_avg moved in place, path
                   # length on w through G(ws=...), lazy R1
                   ("stylegan2", "mnist_stylegan2", ["generator.args={w_dim: 16, map: 2, fmaps: 0.0078125, channel_max: 8}",
                                                     "discriminator.args={fmaps: 0.0078125, channel_max: 8}",
                                                     "train.z_dim=16", "penalties=[{name: r1, every: 2}, "
                                                     "{name: path_length, every: 2}]"])],
    "augmentations": [("diffaugment-pix2pix", "mnist_edges_pix2pix", ["generator.args={ngf: 4}", "augment=diffaugment",
                                                                      "discriminator.args={ndf: 4, n_layers: 1}"]),
                      ("ada-acgan-r1", "mnist_cgan", ["objective=acgan", "generator.args={ngf: 4, fc: 16}",
                                                      "discriminator={name: infogan, args: {ndf: 4, fc: 16, norm: none}}",
                                                      "augment={name: ada, args: {interval: 2, kimg: 0.05}}",
                                                      "penalties=[{name: r1}]"])],
}


def test_every_part_declared_capturable_reads_no_tensor_value_in_the_step(tmp_path, monkeypatch, no_host_sync):
    """What capturable = True promises, checked: a fast-path step with each built-in part that
    declares it never reads a tensor's value from Python (which a CUDA graph cannot capture),
    while a part that does is caught. Every declaring class of the built-in plugins is run."""
    import inspect

    from conftest import make_mnist_like
    from ganforge.contract.manager import builtin_plugins
    from ganforge.plugins.losses import BCE

    digits = make_mnist_like(make_mnist_like(tmp_path / "mnist", n=64), n=16, split="test")
    used = set()
    for runs in CAPTURABLE_RUNS.values():
        for name, recipe, extra in runs:
            state = train(load_recipe(recipe, [f"out_dir={tmp_path / name}", f"data.root={digits}", "train.steps=5",
                                               "data.batch_size=8", "log.every=5", *QUICK, *extra]))
            assert state.stepper.graph and state.step == 5 and state.stepper.seen
            used |= {type(state.system), type(state.system.loss), *(type(fn) for _, fn in state.stepper.penalties)}
            if state.augment is not None:
                used.add(type(state.augment.augment))
    declared = set()
    for module in builtin_plugins().values():
        mod = __import__(module, fromlist=["_"])
        declared |= {c for _, c in inspect.getmembers(mod, inspect.isclass)
                     if c.__module__ == mod.__name__ and vars(c).get("capturable") is True}
    assert declared and declared <= used, f"declared capturable but not run here: {declared - used}"

    class Peeks(BCE):
        capturable = True  # a false promise: it reads a value

        def d_loss(self, real, fake):
            return super().d_loss(real, fake) * (1.0 if float(real.mean()) > -10 else 2.0)

    class Plugin:
        @ganforge.hookimpl
        def ganforge_register_losses(self, register):
            register("peeks", Peeks)

    pm = PluginManager()
    pm.register(Plugin(), name="peeks")
    with pytest.raises(_HostSync, match="Tensor.__float__"):
        train(load_recipe("toy_grid", [f"out_dir={tmp_path / 'peeks'}", "loss=peeks", "train.steps=2", *QUICK]),
              plugins=pm)


def test_a_host_to_device_copy_in_the_step_is_caught(tmp_path, no_host_sync):
    """The guard also catches what issue #27 predicted for labels: data: a tensor kept on the
    host and moved to the device inside the step (there a copy; on this CPU a no-op)."""
    from ganforge.plugins.losses import BCE

    class Copies(BCE):
        capturable = True
        scale = torch.ones(())  # host memory

        def d_loss(self, real, fake):
            return super().d_loss(real, fake) * self.scale.to(real.device)

    class Plugin:
        @ganforge.hookimpl
        def ganforge_register_losses(self, register):
            register("copies", Copies)

    pm = PluginManager()
    pm.register(Plugin(), name="copies")
    with pytest.raises(_HostSync, match=r"Tensor.to\(cpu\) copies a host tensor to the device in the step"):
        train(load_recipe("toy_grid", [f"out_dir={tmp_path}", "loss=copies", "train.steps=3", *QUICK]), plugins=pm)


def _fake_capture(monkeypatch):
    """A CPU stand-in for capture: the engine's capture decisions run as on a GPU; a captured
    pattern is "replayed" by running the step."""
    from ganforge.training import step

    captured = []

    class Replay:
        def __init__(self, stepper, pattern):
            self.stepper, self.pattern = stepper, pattern

        def replay(self):
            self.stepper._step(self.pattern)

    def fake_capture(self, pattern):
        captured.append(pattern)
        self.graphs[pattern] = Replay(self, pattern)

    real_init = step.TrainStep.__init__
    monkeypatch.setattr(step.TrainStep, "__init__", lambda self, *a, **k: real_init(self, *a, **{**k, "capture": True}))
    monkeypatch.setattr(step.TrainStep, "_capture", fake_capture)
    monkeypatch.setattr(engine, "reasons_against", lambda state, penalties: [])
    return captured


def test_a_network_that_reads_a_tensor_value_is_not_captured_and_the_reason_is_printed(tmp_path, monkeypatch, capsys):
    """Issue #27: networks were not part of the capturability check, so a network reading a
    value would have failed inside capture. The watched warm-up run finds it: the step runs
    uncaptured, with the same results, and says which network and why."""
    from ganforge.plugins.mlp import MLPGenerator

    class Peeking(MLPGenerator):
        def forward(self, z, y=None):
            out = super().forward(z, y)
            return out if float(out.abs().max()) < 1e9 else out * 0

    class Plugin:
        @ganforge.hookimpl
        def ganforge_register_generators(self, register):
            register("peeking", lambda *, z_dim, out_shape, **args: Peeking(
                z_dim, out_shape, [32, 32], True, "relu", "none"))

    captured = _fake_capture(monkeypatch)
    clean = train(load_recipe("toy_grid", [f"out_dir={tmp_path / 'clean'}", "train.steps=6", *QUICK]))
    assert clean.stepper.capture and captured  # the clean step would be captured
    assert "not captured" not in capsys.readouterr().out
    captured.clear()
    pm = PluginManager()
    pm.register(Plugin(), name="peeking")
    state = train(load_recipe("toy_grid", [f"out_dir={tmp_path / 'peek'}", "generator=peeking", "train.steps=6",
                                           *QUICK]), plugins=pm)
    out = capsys.readouterr().out
    assert state.step == 6 and not captured and not state.stepper.capture
    assert "fast path: the step is not captured in a CUDA graph (Tensor.__float__() reads a tensor's value in " \
           "network 'G')" in out, out


@pytest.mark.parametrize("fused", [True, False])
def test_host_reads_per_eager_step_at_n_critic_5(tmp_path, monkeypatch, fused):
    """The CPU's sync counter (issue #27): Python reads of a tensor's value per eager step (on a
    GPU each one of a device tensor is a host synchronisation), with 5 D phases + 1 G phase and
    R1. Fused Adam (a GPU's default): none at all; a non-finite loss skips its update through
    found_inf and is counted on the device. Foreach Adam (the CPU default, no found_inf): one
    check per phase run (6) from the step, besides Adam's own reads of its step counters (kept
    on the host there)."""
    from ganforge.training import step
    from ganforge.training.capture import HostTraffic

    counts, checks = [], []
    original = step.TrainStep.__call__

    def counting(self):
        with HostTraffic(strict=True) as watch:
            original(self)
        counts.append(sum("reads" in f for f in watch.found))
        checks.append(sum("Tensor.__bool__" in f for f in watch.found))  # the step's own checks

    monkeypatch.setattr(step.TrainStep, "__call__", counting)
    state = train(load_recipe("toy_grid", [f"out_dir={tmp_path}", "train.steps=6", "train.n_critic=5",
                                           "penalties=[{name: r1, weight: 0.1}]", f"optim.fused={str(fused).lower()}",
                                           "data.args.n=4096", "data.batch_size=64", "log.every=100",
                                           "log.progress=false", "metrics=[]", "log.sample_every=0"]))
    assert state.stepper.deferred is fused and not state.stepper.graph
    if fused:
        assert counts[1:] == [0] * 5, counts  # (the first step also starts the epoch)
    else:
        # 6 checks of the step (one per phase run); the EMA reads nothing (ganforge.training.ema keeps
        # whether it has started in Python; torch's AveragedModel read its counter twice)
        assert checks[1:] == [6] * 5 and min(counts[1:]) >= 6, (checks, counts)


def test_the_cuda_policy_is_stated_and_set(monkeypatch):
    """On CUDA: cudnn.benchmark (fixed shapes every step), TF32 by train.tf32; batches are
    copied without blocking (from pinned memory for datasets read by workers)."""
    from ganforge.training.accelerator import make_accelerator
    from ganforge.training.device import cuda_policy

    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    before = torch.get_float32_matmul_precision()
    try:
        cuda_policy(True)
        assert torch.backends.cudnn.benchmark and torch.backends.cudnn.allow_tf32
        assert torch.get_float32_matmul_precision() == "high"
        cuda_policy(False)
        assert not torch.backends.cudnn.allow_tf32 and torch.get_float32_matmul_precision() == "highest"
    finally:
        torch.set_float32_matmul_precision(before)
    acc = make_accelerator(load_recipe("toy_grid", ["train.threads=1"]))
    assert acc.dataloader_config.non_blocking is True


def test_eager_batches_gathered_on_the_device_match_the_loaders(tmp_path, monkeypatch):
    """In one process whose device holds the dataset (a CPU, one GPU) the eager step gathers
    batches from the epoch's permutation instead of a DataLoader (a list of indices per batch):
    the same batches in the same order, so the same run, across epochs. It is the default."""
    from ganforge.training import step

    real_init = step.TrainStep.__init__
    overrides = [*TOY, "optim.fused=false"]
    device = _train(tmp_path / "device", monkeypatch, False, "toy_grid", overrides)
    assert device.stepper.device_batches and not device.stepper.deferred
    monkeypatch.setattr(step.TrainStep, "__init__",
                        lambda self, *a, **k: real_init(self, *a, **{**k, "device_batches": False}))
    loader = _train(tmp_path / "loader", monkeypatch, False, "toy_grid", overrides)
    assert not loader.stepper.device_batches
    _assert_same_run(loader, device, tmp_path / "loader", tmp_path / "device")


def test_the_deferred_skip_checks_that_the_optimizer_reads_found_inf(tmp_path, monkeypatch, capsys):
    """Issue #35: the non-finite skip of the graph step (and of the eager step with fused Adam)
    relies on fused Adam reading ``found_inf``, an attribute torch does not promise. A start-up
    probe checks it: where an optimizer ignores it, the eager step reads non-finite losses on the
    host instead, and the graph step refuses to start, each in one line."""
    import torch

    from ganforge.errors import GanforgeError
    from ganforge.training import step as step_module
    from ganforge.training.optim import skips_on_found_inf

    p = [torch.nn.Parameter(torch.randn(3))]
    assert skips_on_found_inf(torch.optim.Adam(p, fused=True))

    class Forgetful(torch.optim.Adam):  # a future Adam that stops reading found_inf
        def step(self, closure=None):
            self.__dict__.pop("found_inf", None)
            return super().step(closure)

    assert not skips_on_found_inf(Forgetful(p, fused=True))
    monkeypatch.setattr(step_module, "skips_on_found_inf", lambda opt: False)
    state = _train(tmp_path / "eager", monkeypatch, False, "toy_grid", ["optim.fused=true", "train.steps=2", *QUICK])
    assert not state.stepper.deferred
    assert "ignore found_inf in this torch: a non-finite loss is seen by reading it on the host" in capsys.readouterr().out
    with pytest.raises(GanforgeError, match="could not skip a non-finite update; set train.cuda_graph=false"):
        _train(tmp_path / "graph", monkeypatch, True, "toy_grid", ["train.steps=2", *QUICK])
