"""Class-conditional GANs (objectives conditional and acgan): labels reach G and D, cBN and the
projection term against hand computations, the fast path equals the eager step, DDP with labels,
exact resume, sampling by label, labelled image folders, and the conditional metrics."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

from conftest import SHARED_MNIST, make_mnist_like
from ganforge.contract.recipes import load_recipe
from ganforge.training.engine import train
from ganforge.contract.layers import ConditionalBatchNorm
from ganforge.contract.manager import PluginManager

REG = PluginManager().registry
QUICK = ["log.progress=false", "metrics=[]", "log.sample_every=0"]
SHAPES = {"mlp": (1, 28, 28), "dcgan": (1, 28, 28), "infogan": (1, 28, 28)}


def _randomize(module):
    """Embeddings start at zero in cBN (plain BatchNorm at first): give them values."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.Embedding):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.5)


@pytest.mark.parametrize("arch", ["mlp", "dcgan", "infogan"])
@pytest.mark.parametrize("g_cond, d_cond", [("cbn", "projection"), ("concat", "concat")])
def test_labels_reach_g_and_d(arch, g_cond, d_cond):
    shape = SHAPES[arch]
    G = REG.build("generator", arch, {"cond": g_cond}, z_dim=16, out_shape=shape, num_classes=10)
    D = REG.build("discriminator", arch, {"cond": d_cond}, in_shape=shape, num_classes=10)
    _randomize(G), _randomize(D)
    G.eval(), D.eval()
    z = torch.randn(4, 16).repeat(2, 1)
    y = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    with torch.no_grad():
        x = G(z, y)
        assert not torch.allclose(x[:4], x[4:])  # same z, other labels: other samples
        logits = D(x, y)
        other = D(x, (y + 1) % 10)
        assert logits.shape == (8,) and not torch.allclose(logits, other)
    with pytest.raises(ValueError, match="class-conditional .* call it with labels"):
        G(z)


def test_projection_term_is_the_embedding_dot_the_features():
    """Miyato & Koyama: D(x, y) = last(h) + <embed(y), phi(h)>, phi = sum over space."""
    D = REG.build("discriminator", "mlp", {"hidden": [16]}, in_shape=(2,), num_classes=3)
    x, y = torch.randn(5, 2), torch.tensor([0, 1, 2, 1, 0])
    with torch.no_grad():
        h = D.net[:-1](x)
        by_hand = D.net[-1](h).view(-1) + (D.embed.weight[y] * h).sum(1)
        assert torch.allclose(D(x, y), by_hand)
    Dc = REG.build("discriminator", "dcgan", {"ndf": 8, "norm": "none"}, in_shape=(1, 28, 28), num_classes=10)
    x, y = torch.randn(3, 1, 28, 28), torch.tensor([9, 0, 4])
    with torch.no_grad():
        h = Dc.net[:-1](x)  # (3, C, 7, 7) feature maps before the last conv
        by_hand = Dc.net[-1](h).view(-1) + (Dc.embed.weight[y] * h.sum((2, 3))).sum(1)
        assert torch.allclose(Dc(x, y), by_hand, atol=1e-5)


def test_cbn_with_one_class_is_batchnorm_with_that_class_gain_and_bias():
    cbn = ConditionalBatchNorm(6, 4)
    _randomize(cbn)
    x = torch.randn(16, 6, 5, 5)
    y = torch.full((16,), 2)
    expected = F.batch_norm(x, None, None, weight=1 + cbn.gain.weight[2], bias=cbn.bias.weight[2], training=True)
    assert torch.allclose(cbn(x, y), expected, atol=1e-5)
    # a mixed batch: one batch statistic, each sample its own class's gain and bias
    y = torch.tensor([0, 3] * 8)
    out = cbn(x, y)
    normed = F.batch_norm(x, None, None, training=True)
    assert torch.allclose(out[1], normed[1] * (1 + cbn.gain.weight[3])[:, None, None] + cbn.bias.weight[3][:, None, None],
                          atol=1e-5)


def _checkpoint(folder):
    return {f.stem: load_file(str(f)) for f in sorted(folder.glob("*.safetensors"))}


@pytest.mark.parametrize("objective, disc", [("conditional", "{ndf: 8, norm: none}"),
                                             ("acgan", "{ndf: 8, norm: none}")])
def test_fast_path_step_equals_the_eager_step(tmp_path, monkeypatch, mnist_dir, objective, disc):
    """The conditional step as the GPU would capture it (labels gathered with the data on the
    device), run uncaptured: bitwise the eager step's weights, Adam moments, EMA and logs."""
    from ganforge.training import engine

    over = [f"data.root={mnist_dir}", "data.batch_size=32", f"objective={objective}", "generator.args.ngf=8",
            f"discriminator={{name: dcgan, args: {disc}}}", "penalties=[{name: r1, every: 2}]", "train.ema=0.9",
            "train.steps=6", "log.every=3", "log.checkpoint_every=3", "optim.fused=true",
            "train.autocast_cache=false", *QUICK]  # (the graph path's cast policy on both)
    runs = {}
    for graph in (False, True):
        with monkeypatch.context() as m:
            if graph:
                m.setattr(engine, "reasons_against", lambda state, penalties: [])
            runs[graph] = train(load_recipe("mnist_dcgan", [f"out_dir={tmp_path / str(graph)}", *over]))
        assert runs[graph].stepper.graph is graph
    for step in ("step-00000003", "step-00000006"):
        a, b = (_checkpoint(tmp_path / str(g) / "checkpoints" / step) for g in (False, True))
        assert a.keys() == b.keys()
        for name in a:
            for key in a[name]:
                assert torch.equal(a[name][key], b[name][key]), f"{step}/{name}/{key}"
    rows = [[{k: v for k, v in json.loads(r).items() if k != "images_per_s"}
             for r in (tmp_path / str(g) / "metrics.jsonl").read_text().splitlines()] for g in (False, True)]
    assert rows[0] == rows[1]
    if objective == "acgan":
        assert "ac_ce_real" in rows[0][0] and "ac_ce_fake" in rows[0][0]


def test_conditional_run_resumes_exactly(tmp_path):
    over = ["objective=conditional", "data.args.n=2000", "train.ema=0.9", "penalties=[{name: r1, every: 2}]",
            "optim.lr_decay=none",  # (a schedule over train.steps would differ between 4 and 8)
            "log.every=4", *QUICK]
    train(load_recipe("toy_grid", [f"out_dir={tmp_path / 'whole'}", "train.steps=8", *over]))
    train(load_recipe("toy_grid", [f"out_dir={tmp_path / 'parts'}", "train.steps=4", *over]))
    train(load_recipe("toy_grid", [f"out_dir={tmp_path / 'parts'}", "train.steps=8", "resume=auto", *over]))
    a = _checkpoint(tmp_path / "whole" / "checkpoints" / "step-00000008")
    b = _checkpoint(tmp_path / "parts" / "checkpoints" / "step-00000008")
    for name in a:
        for key in a[name]:
            assert torch.equal(a[name][key], b[name][key]), f"{name}/{key}"


DDP = textwrap.dedent("""
    import sys, torch
    from safetensors.torch import save_file
    from ganforge import load_recipe
    from ganforge.training.engine import train

    state = train(load_recipe("toy_grid", sys.argv[1:]))
    acc = state.accelerator
    out = {f"{n}.{k}": v for n, m in state.nets.items() for k, v in acc.unwrap_model(m).state_dict().items()}
    x, y = next(iter(state.loader))
    out["labels"] = y
    save_file({k: v.contiguous() for k, v in out.items()}, f"{state.output_dir}/rank{acc.process_index}.safetensors")
""")


@pytest.mark.slow
def test_two_ranks_with_labels(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP)
    env = dict(os.environ, ACCELERATE_USE_CPU="1", WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), f"out_dir={tmp_path / 'run'}", "objective=conditional", "train.steps=4",
                           "data.args.n=2048", "data.batch_size=32", "penalties=[{name: r1, every: 2}]", *QUICK],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (load_file(str(tmp_path / "run" / f"rank{r}.safetensors")) for r in (0, 1))
    assert any(k.startswith("D.embed") for k in r0)  # the projection D was trained
    for key in r0:
        if key != "labels":
            assert torch.equal(r0[key], r1[key]), key
    assert not torch.equal(r0["labels"], r1["labels"])  # each rank its own shard, labels with it


def test_sample_by_label_after_a_short_run(tmp_path, run_cli):
    """A short conditional run on the 25-Gaussian grid (the label is the mode): samples asked
    for a label land in that label's mode (nearest mean), far above chance (1/25)."""
    from ganforge.plugins.toy import grid_means

    code, _, err = run_cli("train", "toy_grid", f"out_dir={tmp_path / 'toy'}", "objective=conditional",
                           "train.steps=400", "log.every=100", *QUICK)
    assert code == 0, err
    means = torch.as_tensor(grid_means()).float()
    for label in (0, 7, 12, 24):
        out = tmp_path / f"l{label}.npz"
        code, printed, err = run_cli("sample", tmp_path / "toy", "--label", label, "--n", "200", "--out", out)
        assert code == 0 and "with their labels" in printed, err
        arrays = np.load(out)
        assert arrays["samples"].shape == (200, 2) and (arrays["labels"] == label).all()
        hit = (torch.cdist(torch.from_numpy(arrays["samples"]), means).argmin(1) == label).float().mean()
        assert hit >= 0.9, (label, float(hit))  # measured 2026-11-28: 1.0 for each


def test_sample_by_label_writes_grids_and_refuses_a_label_out_of_range(tmp_path, run_cli, mnist_dir):
    code, _, err = run_cli("train", "mnist_cgan", f"data.root={mnist_dir}", f"out_dir={tmp_path / 'run'}",
                           "train.steps=2", "data.batch_size=16", "generator.args={ngf: 8, fc: 32}",
                           "discriminator.args={ndf: 8, fc: 32, norm: none}", *QUICK)
    assert code == 0, err
    assert Image.open(tmp_path / "run" / "samples-final.png").size == (7 * 30 + 2, 10 * 30 + 2)  # a row per class
    code, _, _ = run_cli("sample", tmp_path / "run", "--label", "all", "--n", "30", "--out", tmp_path / "all.png")
    assert code == 0 and Image.open(tmp_path / "all.png").size == (3 * 30 + 2, 10 * 30 + 2)
    code, _, _ = run_cli("sample", tmp_path / "run", "--label", "all", "--n", "20", "--out", tmp_path / "all.npz")
    assert code == 0 and np.load(tmp_path / "all.npz")["labels"].tolist() == [c for c in range(10) for _ in (0, 1)]
    code, _, err = run_cli("sample", tmp_path / "run", "--label", "12", "--out", tmp_path / "x.npz")
    assert code == 2 and err.strip() == "error: --label 12 is out of range: this run has 10 classes (0 to 9), or use --label all"
    assert not (tmp_path / "x.npz").exists()


def test_label_on_an_unconditional_run_is_one_clear_line(tmp_path, run_cli):
    train(load_recipe("toy_grid", [f"out_dir={tmp_path}", "train.steps=2", *QUICK]))
    code, _, err = run_cli("sample", tmp_path, "--label", "3", "--out", tmp_path / "x.npz")
    assert code == 2 and "--label needs a class-conditional run" in err and "'unconditional'" in err


def test_labelled_image_folder_feeds_a_conditional_run(tmp_path):
    for cls, shade in (("cats", 40), ("dogs", 220)):
        folder = tmp_path / "imgs" / cls
        folder.mkdir(parents=True)
        for i in range(12):
            Image.new("RGB", (20, 20), (shade, shade, (i * 9) % 256)).save(folder / f"{i}.png")
    data = REG.build("dataset", "image_folder", {"size": 16, "classes": True}, root=str(tmp_path / "imgs"),
                     download=False)
    assert data.num_classes == 2 and data.classes == ["cats", "dogs"] and len(data) == 24
    x, y = data[0]
    assert x.shape == (3, 16, 16) and y == 0 and data[23][1] == 1
    state = train(load_recipe("cifar10_dcgan", [
        f"out_dir={tmp_path / 'run'}", "data.name=image_folder", f"data.root={tmp_path / 'imgs'}",
        "data.args={size: 16, classes: true}", "data.batch_size=8", "data.num_workers=0", "objective=conditional",
        "generator.args={ngf: 8}", "discriminator.args={ndf: 8}", "train.steps=2", "train.ema=0", *QUICK]))
    assert state.system.num_classes == 2 and state.step == 2
    with pytest.raises(Exception, match="one-sub-folder-per-class layout"):
        REG.build("dataset", "image_folder", {"classes": True}, root=str(tmp_path / "imgs" / "cats"), download=False)


def test_conditional_needs_labelled_data(tmp_path):
    from ganforge.errors import ConfigError

    files = tmp_path / "flat"
    files.mkdir()
    for i in range(8):
        Image.new("RGB", (16, 16), (i * 30, 0, 0)).save(files / f"{i}.png")
    with pytest.raises(ConfigError, match="needs a dataset with classes"):
        train(load_recipe("cifar10_dcgan", [f"out_dir={tmp_path / 'run'}", "data.name=image_folder",
                                            f"data.root={files}", "data.args={size: 16}", "data.batch_size=4",
                                            "objective=conditional", *QUICK]))


def test_conditional_metrics_on_generated_idx_files(tmp_path):
    """conditional_accuracy is the classifier's agreement with the asked labels: 1 when the
    labels are its own predictions, lower when they are shuffled; intra_class_fd compares
    each class with the real test images of that class."""
    root = make_mnist_like(tmp_path / "mnist", n=300)
    make_mnist_like(root, n=400, split="test")
    train_set = REG.build("dataset", "mnist", {}, root=str(root), download=False)
    metric = REG.build("metric", "mnist", {"n_real": 400}, dataset=train_set)
    test = REG.build("dataset", "mnist", {"split": "test"}, root=str(root), download=False)
    images = test.normalize(test.data)
    predicted = metric.embed(images)[0].argmax(1)
    out = metric(images, labels=predicted)
    assert out["conditional_accuracy"] == 1.0 and "intra_class_fd" in out
    shuffled = predicted[torch.randperm(len(predicted), generator=torch.Generator().manual_seed(0))]
    assert metric(images, labels=shuffled)["conditional_accuracy"] < 0.9
    assert "conditional_accuracy" not in metric(images)  # unconditional samples: no label metrics


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="needs the real MNIST in ../shared/data/mnist; "
                    "test_conditional_metrics_on_generated_idx_files runs the same code")
def test_conditional_metrics_on_real_digits():
    train_set = REG.build("dataset", "mnist", {"limit": 100}, root=str(SHARED_MNIST), download=False)
    metric = REG.build("metric", "mnist", {"n_real": 10000}, dataset=train_set)
    test = REG.build("dataset", "mnist", {"split": "test"}, root=str(SHARED_MNIST), download=False)
    images, labels = test.normalize(test.data[:5000]), test.labels[:5000]
    right = metric(images, labels=labels)
    wrong = metric(images, labels=(labels + 1) % 10)
    # (measured 2026-11-28: 0.991 and 14.7 right, 0.0008 and 1951 wrong; the first 5000 test
    # digits against 10000 random ones also give an unconditional FD of 9.5: other writers)
    assert right["conditional_accuracy"] >= 0.98 and wrong["conditional_accuracy"] < 0.02
    assert right["intra_class_fd"] < 0.05 * wrong["intra_class_fd"]


def test_labels_data_draws_with_the_data_frequencies_from_a_cdf_on_the_device():
    """objective.args.labels=data: inverse-CDF draws (tensor code a CUDA graph captures; the
    CDF is made on the device once, not copied inside the step: issue #27)."""
    import torch

    from ganforge.plugins.conditional import Conditional
    from ganforge.plugins.losses import BCE
    from ganforge.recipe.types import Optim

    freq = torch.tensor([0.5, 0.3, 0.2, 0.0])
    system = Conditional(BCE(), 8, (2,), 1, Optim(), 4, labels="data", frequencies=freq)
    system.setup({"G": torch.nn.Linear(2, 2)})
    assert list(system._cdf) == [torch.device("cpu")]  # made by setup, on the networks' device
    labels = system.draw_labels(200_000, "cpu", torch.Generator().manual_seed(0))
    share = torch.bincount(labels, minlength=4).double() / len(labels)
    assert torch.allclose(share, freq.double(), atol=0.005) and share[3] == 0
    again = system.draw_labels(1000, "cpu", torch.Generator().manual_seed(3))
    assert torch.equal(again, system.draw_labels(1000, "cpu", torch.Generator().manual_seed(3)))  # seeded
