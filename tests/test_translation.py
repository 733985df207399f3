"""Image-to-image translation (issue #15): the U-Net, ResNet and PatchGAN networks, the pix2pix
and CycleGAN systems (plugins on the systems contract: no engine edit), their datasets,
metrics and ``ganforge translate``. Data are generated here: MNIST-format files and tiny
image folders."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import make_mnist_like
from test_systems import _assert_same as _same, _checkpoint as _files
from ganforge.contract.recipes import load_recipe
from ganforge.training.engine import train
from ganforge.contract.manager import PluginManager
from ganforge.plugins.translation.cyclegan import CycleGAN, ImagePool
from ganforge.plugins.translation.patchgan import patchgan, receptive_field
from ganforge.plugins.translation.pix2pix import Pix2Pix
from ganforge.plugins.translation.resnet_generator import resnet_generator
from ganforge.plugins.translation.data import dilate, edges, mnist_edges, mnist_thick, paired_folder
from ganforge.plugins.translation.metrics import psnr, ssim
from ganforge.plugins.translation.unet import UNetBlock, unet

TESTS = Path(__file__).resolve().parent
QUICK = ["log.progress=false", "log.sample_every=0", "log.every=2"]
TINY_P2P = ["generator.args={ngf: 4}", "discriminator.args={ndf: 4, n_layers: 1}", "data.batch_size=4",
            "log.eval_samples=16"]
TINY_CYC = ["generator.args={ngf: 4, blocks: 1}", "discriminator.args={ndf: 4, n_layers: 1, norm: instance}",
            "data.batch_size=4", "objective.args.pool_size=4", "log.eval_samples=16"]


@pytest.fixture
def digits(tmp_path):
    """MNIST-format train and test files (generated)."""
    folder = make_mnist_like(tmp_path / "mnist", n=64)
    return make_mnist_like(folder, n=40, split="test")


class _Optim:
    lr_g = lr_d = 2e-4
    betas = (0.5, 0.999)
    weight_decay = 0.0


def _loss(name):
    from ganforge.plugins.losses import LeastSquares, BCE

    return {"lsgan": LeastSquares(), "bce": BCE()}[name]


# ------------------------------------------------------------------ networks
def test_unet_any_power_of_two_size_with_skips_and_decoder_dropout():
    for size, depth, drops in ((32, 5, 1), (64, 6, 1), (256, 8, 3)):
        g = unet(in_shape=(1, size, size), out_shape=(3, size, size), ngf=2)
        assert g.depth == depth  # down to 1x1
        assert g(torch.randn(2, 1, size, size)).shape == (2, 3, size, size)
        assert sum(isinstance(m, nn.Dropout) for m in g.modules()) == drops  # paper: 3 CD512 blocks at 256
    # skip connections: each inner level returns its input concatenated with the decoder's output
    g = unet(in_shape=(1, 32, 32), out_shape=(1, 32, 32), ngf=2)
    seen = []
    for m in g.modules():
        if isinstance(m, UNetBlock) and not m.outermost:
            m.register_forward_hook(lambda mod, i, o: seen.append((i[0].shape[1], o.shape[1])))
    g(torch.randn(1, 1, 32, 32))
    assert seen and all(out == 2 * inp for inp, out in seen)
    for size in (16, 48):
        with pytest.raises(ValueError, match="power-of-two images from 32"):
            unet(in_shape=(3, size, size), out_shape=(3, size, size))
    with pytest.raises(ValueError, match="norm must be one of batch, instance, none"):
        unet(in_shape=(3, 32, 32), out_shape=(3, 32, 32), norm="layer")


def test_resnet_generator_blocks_and_patchgan_receptive_field():
    assert resnet_generator(in_shape=(3, 256, 256), out_shape=(3, 256, 256), ngf=2).blocks == 9
    g = resnet_generator(in_shape=(3, 128, 128), out_shape=(3, 128, 128), ngf=2)
    assert g.blocks == 6 and g(torch.randn(1, 3, 128, 128)).shape == (1, 3, 128, 128)
    # the receptive field, measured: the input pixels one output logit depends on
    for n_layers, field in ((1, 16), (2, 34), (3, 70)):
        assert receptive_field(n_layers) == field
        d = patchgan(in_shape=(1, 160, 160), ndf=2, n_layers=n_layers, norm="none")
        with torch.no_grad():  # positive weights: no cancellation hides a dependency
            for p in d.parameters():
                p.abs_()
        x = torch.randn(1, 1, 160, 160, requires_grad=True)
        out = d(x)
        out[0, 0, out.shape[2] // 2, out.shape[3] // 2].backward()
        rows = (x.grad[0, 0].abs().sum(1) > 0).nonzero()
        assert int(rows.max() - rows.min() + 1) == field
    with pytest.raises(ValueError, match="needs images of at least 24 pixels"):
        patchgan(in_shape=(3, 16, 16), n_layers=3)


# ------------------------------------------------------------------ pix2pix
class _Spy(nn.Module):
    """A discriminator that records its inputs and returns their mean as a 1x1 logit map."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))
        self.inputs = []

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        return (self.w * x.mean((1, 2, 3))).view(-1, 1, 1, 1)


def test_pix2pix_judges_concatenated_pairs_and_weights_l1(digits, precision):
    """In fp32 and under bf16 autocast (G's output is then bf16; the L1 is computed in fp32 on it)."""
    data = mnist_edges(root=str(digits))
    batch = data.fetch(torch.arange(4))
    a, b = batch[0], batch[1]
    G = nn.Conv2d(1, 1, 1)  # deterministic
    systems = {w: Pix2Pix(_loss("bce"), data, _Optim(), l1_weight=w) for w in (100.0, 10.0)}
    for system in systems.values():
        system.setup({"G": G, "D": _Spy()})
    assert systems[100.0].networks["D"].context["in_shape"] == (2, 32, 32)  # input + output channels
    assert systems[100.0].channel_split == (1, 1)  # the augmentation transforms both images alike
    with precision.autocast():
        terms = systems[100.0].d_loss(batch)
        ga = G(a)
        g100, g10 = systems[100.0].g_loss(batch), systems[10.0].g_loss(batch)
    assert ga.dtype == precision.dtype
    real, fake = systems[100.0].nets["D"].inputs[:2]  # (d_loss's two calls; g_loss's follow)
    assert torch.equal(real, torch.cat([a, b], 1))
    assert torch.equal(fake, torch.cat([a, ga.detach().to(fake.dtype)], 1))
    judged = terms.judged["D"]
    assert judged.real[0].shape == real.shape and judged.real_logits is not None  # penalties see the pairs too
    l1 = (ga.float() - b).abs().mean()
    assert g100.logs["g_l1"].dtype == torch.float32 and torch.allclose(g100.logs["g_l1"], l1)
    assert torch.allclose(g100.loss - g10.loss, 90 * l1, rtol=1e-5)  # adv + weight * L1
    assert torch.allclose(g100.loss, g100.logs["g_gan"] + 100 * l1, rtol=1e-5)
    # gan_weight 0: the L1-only baseline, a system of G alone
    alone = Pix2Pix(_loss("bce"), data, _Optim(), gan_weight=0)
    assert list(alone.networks) == ["G"] and [p.name for p in alone.phases] == ["G"]


# ------------------------------------------------------------------ CycleGAN
class _Affine(nn.Module):
    def __init__(self, scale, shift):
        super().__init__()
        self.scale, self.shift = scale, shift
        self.p = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return x * self.scale + self.shift + self.p


def test_cyclegan_cycle_and_identity_terms_match_hand_computed_values(digits, precision):
    data = mnist_thick(root=str(digits))
    system = CycleGAN(_loss("lsgan"), data, _Optim(), cycle_weight=10.0, identity=0.5, gan_weight=2.0)
    zero_d = _Affine(0.0, 0.0)  # D(x) = 0 everywhere: lsgan's G term is 0.5 * (0 - 1)^2 = 0.5
    system.setup({"G_AB": _Affine(0.5, 0.0), "G_BA": _Affine(1.0, 0.1), "D_A": zero_d, "D_B": zero_d})
    a, b = torch.full((2, 1, 32, 32), 0.4), torch.full((2, 1, 32, 32), -0.2)
    with precision.autocast():
        terms = system.g_loss((a, b))
        d = system.d_loss((a, b))  # D(x) = 0: 0.5 * (0 - 1)^2 + 0.5 * 0^2 per discriminator
    assert terms.loss.dtype == d.loss.dtype == torch.float32
    # cycle: G_BA(G_AB(a)) = 0.5 a + 0.1 -> |0.3 - 0.4| = 0.1; G_AB(G_BA(b)) = 0.5 (b + 0.1) -> |-0.05 + 0.2| = 0.15
    assert terms.logs["cycle_a"].item() == pytest.approx(0.1) and terms.logs["cycle_b"].item() == pytest.approx(0.15)
    # identity: |G_AB(b) - b| = |-0.1 + 0.2| = 0.1, |G_BA(a) - a| = 0.1
    assert terms.logs["identity"].item() == pytest.approx(0.2)
    expected = 2.0 * (0.5 + 0.5) + 10 * (0.1 + 0.15) + 0.5 * 10 * 0.2
    assert terms.loss.item() == pytest.approx(expected)
    assert d.loss.item() == pytest.approx(1.0) and set(d.judged) == {"D_A", "D_B"}


def test_image_pool_fills_then_swaps_and_round_trips():
    torch.manual_seed(0)
    pool = ImagePool(4)
    first = torch.arange(4.0).view(4, 1, 1, 1)
    assert torch.equal(pool.query(first), first) and len(pool) == 4  # filling: shown as they are
    new = torch.arange(10.0, 18.0).view(8, 1, 1, 1)
    out = pool.query(new)
    from_pool = [v for v in out.flatten().tolist() if v < 10]
    assert from_pool and len(from_pool) < 8  # some stored fakes shown, some new ones
    assert set(from_pool) <= set(range(4)) and any(v >= 10 for v in pool.images.flatten().tolist())
    copy = ImagePool(4)
    copy.load(pool.state(), "cpu")
    assert torch.equal(copy.images, pool.images)
    assert torch.equal(ImagePool(0).query(new), new)  # pool_size 0: no pool


def test_cyclegan_pools_survive_a_checkpoint_and_resume_is_bitwise(tmp_path, digits):
    over = [f"data.root={digits}", *TINY_CYC, *QUICK, "optim.lr_decay=linear", "optim.lr_decay_start=0.5",
            "train.ema=0.5", "metrics=[]"]
    whole = train(load_recipe("mnist_thick_cyclegan", [f"out_dir={tmp_path / 'whole'}", "train.steps=6", *over]))
    assert set(whole.nets) == {"G_AB", "G_BA", "D_A", "D_B"} and set(whole.emas) == {"G_AB", "G_BA"}
    files = _files(tmp_path / "whole" / "checkpoints" / "step-00000006")
    pools = files["system-rank0"]
    assert pools["pool_A"].shape == (4, 1, 32, 32) and pools["pool_B"].shape == (4, 1, 32, 32)
    assert torch.equal(pools["pool_A"], whole.system.pools["A"].images.cpu())
    train(load_recipe("mnist_thick_cyclegan", [f"out_dir={tmp_path / 'parts'}", "train.steps=6", *over]),
          plugins=_stop_at(3))
    resumed = train(load_recipe("mnist_thick_cyclegan", [f"out_dir={tmp_path / 'parts'}", "train.steps=6",
                                                         "resume=auto", *over]))
    assert resumed.step == 6
    _same(files, _files(tmp_path / "parts" / "checkpoints" / "step-00000006"))
    rows = [json.loads(r) for r in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert {"cycle_a", "cycle_b", "identity", "g_gan", "loss_g", "loss_d"} <= set(rows[-1])


def _stop_at(step):
    """A plugin manager whose step_end hook sends SIGINT at ``step`` (the run checkpoints and stops)."""
    import signal

    import ganforge

    class Stop:
        @ganforge.hookimpl
        def ganforge_step_end(self, state, logs):
            if state.step == step:
                signal.raise_signal(signal.SIGINT)

    pm = PluginManager()
    pm.register(Stop(), name="stop")
    return pm


DDP_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    import torch
    import translation_watch
    from ganforge import load_recipe
    from ganforge.training.engine import train
    from ganforge.contract.manager import get_plugin_manager

    get_plugin_manager().register(translation_watch, name="watch")
    state = train(load_recipe("mnist_thick_cyclegan", sys.argv[1:]))
    held = [ok for _, ok in translation_watch.WATCH]
    kinds = sorted({{w for w, _ in translation_watch.WATCH}})
    print("WATCH", state.accelerator.process_index, len(held), all(held), kinds)
""")


@pytest.mark.slow
def test_cyclegan_under_two_processes_freezes_what_each_phase_does_not_train(tmp_path, digits):
    script = tmp_path / "ddp_cyclegan.py"
    script.write_text(DDP_SCRIPT.format(tests=str(TESTS)))
    env = dict(os.environ, ACCELERATE_USE_CPU="1", WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    args = [f"out_dir={tmp_path / 'run'}", f"data.root={digits}", *TINY_CYC, *QUICK, "objective.name=cyclegan_watch",
            "objective.args={pool_size: 4}", "train.steps=4", "metrics=[]"]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), *args], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line.split(" ", 3) for line in proc.stdout.splitlines() if line.startswith("WATCH")]
    assert sorted(line[1] for line in lines) == ["0", "1"]
    for _, _, count, rest in lines:
        # 4 steps x 4 checks (the first G phase has no earlier D phase to compare with): all held
        assert int(count) == 4 * 4 - 1 and rest.startswith("True")
        assert all(k in rest for k in ("G: others frozen", "D: others frozen", "G grads untouched",
                                       "D grads untouched"))
    pools = _files(tmp_path / "run" / "checkpoints" / "step-00000004")
    assert not torch.equal(pools["system-rank0"]["pool_A"], pools["system-rank1"]["pool_A"])  # a pool per rank


# ------------------------------------------------------------------ datasets
def _write_pairs(folder, n=3, size=40, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        half = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(np.concatenate([half, half], 1)).save(folder / f"{i}.png")  # A|B with A == B


def test_paired_folder_crops_and_flips_both_halves_alike(tmp_path):
    _write_pairs(tmp_path / "train", n=2)
    data = paired_folder(root=str(tmp_path), size=32, load_size=40)
    assert data.sample_shape == data.input_shape == (3, 32, 32) and data.paired
    torch.manual_seed(0)
    crops = []
    for _ in range(12):
        a, b = data[0]
        assert torch.equal(a, b)  # identical halves stay identical: the same crop and flip on both
        crops.append(a)
    assert len({c.sum().item() for c in crops}) > 3  # and the jitter does vary
    flipped = paired_folder(root=str(tmp_path), size=40, load_size=40)  # no crop: only flips differ
    outs = [flipped[1][0] for _ in range(12)]
    assert any(torch.equal(o, outs[0].flip(-1)) for o in outs) and any(torch.equal(o, outs[0]) for o in outs[1:])


def test_malformed_translation_folders_are_one_clear_line(tmp_path, run_cli):
    (tmp_path / "u" / "trainA").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "u" / "trainA" / "x.png")
    code, _, err = run_cli("train", "horse2zebra_cyclegan", f"data.root={tmp_path / 'u'}", f"out_dir={tmp_path / 'o'}")
    assert code == 2 and "trainB is missing" in err and err.count("\n") == 1
    _write_pairs(tmp_path / "p" / "train", n=2)
    Image.new("RGB", (40, 40)).save(tmp_path / "p" / "train" / "square.png")
    code, _, err = run_cli("train", "facades_pix2pix", f"data.root={tmp_path / 'p'}", f"out_dir={tmp_path / 'o2'}")
    assert code == 2 and "square.png is 40x40, not an A|B pair" in err and err.count("\n") == 1
    (tmp_path / "p" / "train" / "square.png").write_bytes(b"not a png")
    code, _, err = run_cli("train", "facades_pix2pix", f"data.root={tmp_path / 'p'}", f"out_dir={tmp_path / 'o3'}")
    assert code == 2 and "square.png: cannot read this image" in err and err.count("\n") == 1
    code, _, err = run_cli("train", "mnist_thick_cyclegan", "objective=pix2pix", f"out_dir={tmp_path / 'o4'}",
                           f"data.root={tmp_path / 'nowhere'}")
    assert code == 2 and err.count("\n") == 1


def test_mnist_demos_are_what_they_say(digits):
    paired = mnist_edges(root=str(digits))
    a, b, y = paired.fetch(torch.arange(8))
    assert a.shape == b.shape == (8, 1, 32, 32) and paired.paired and y.shape == (8,)
    raw = ((b + 1) * 127.5).round().to(torch.uint8)
    assert torch.equal(((a + 1) * 127.5).round().to(torch.uint8), edges(raw))  # A is B's outer edge
    thick = mnist_thick(root=str(digits))
    assert not thick.paired and len(thick) == 32  # A and B: disjoint halves of 64 digits
    held = thick.evaluation()
    assert torch.equal(held.target_ab, (dilate(((held.a + 1) * 127.5).round()) / 127.5 - 1))
    assert torch.equal(held.b, dilate(held.target_ba))  # each held-out B knows its thin original


# ------------------------------------------------------------------ metrics
def test_ssim_from_torchmetrics_is_wang_et_al_over_the_windows_inside_the_image():
    """torchmetrics computes it; ganforge averages the windows inside the image, as the paper
    and scikit-image do (torchmetrics' own mean adds reflection-padded borders): equal to the
    direct formula, so the SSIM figures measured before torchmetrics stand."""
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 32, 32, generator=g) * 2 - 1
    y = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    u, v = (x.double() + 1) / 2, (y.double() + 1) / 2
    k = torch.exp(-((torch.arange(11, dtype=torch.float64) - 5) ** 2) / (2 * 1.5 ** 2))
    k = (k / k.sum())[:, None] * (k / k.sum())[None, :]
    blur = lambda t: F.conv2d(t, k.expand(3, 1, 11, 11), groups=3)  # noqa: E731 - 'valid' windows only
    mu, mv = blur(u), blur(v)
    vu, vv, cov = blur(u * u) - mu ** 2, blur(v * v) - mv ** 2, blur(u * v) - mu * mv
    direct = ((2 * mu * mv + 1e-4) * (2 * cov + 9e-4)) / ((mu ** 2 + mv ** 2 + 1e-4) * (vu + vv + 9e-4))
    assert torch.allclose(ssim(x, y), direct.flatten(1).mean(1), atol=1e-12)


def test_ssim_and_psnr_against_hand_computed_values():
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    assert torch.allclose(ssim(x, x), torch.ones(2, dtype=torch.float64))
    # constant images: SSIM = (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1) (no variance)
    u, v = torch.full((1, 1, 16, 16), 0.0), torch.full((1, 1, 16, 16), 0.5)  # 0.5 and 0.75 on [0, 1]
    c1 = 0.01 ** 2
    assert ssim(u, v).item() == pytest.approx((2 * 0.5 * 0.75 + c1) / (0.25 + 0.5625 + c1), rel=1e-9)
    assert psnr(u, v).item() == pytest.approx(10 * np.log10(1 / 0.25 ** 2))


def test_translation_metrics_score_outputs_and_the_identity_baseline(digits):
    from ganforge.plugins.translation.metrics import translation

    data = mnist_thick(root=str(digits))
    system = CycleGAN(_loss("lsgan"), data, _Optim())
    inputs = system.noise(8)
    perfect = torch.cat([inputs.target_ab, inputs.target_ba])  # the true translations
    scores = translation()(perfect, data, inputs=inputs)
    assert scores["AtoB_l1"] == 0 and scores["BtoA_ssim"] == pytest.approx(1.0)
    assert scores["AtoB_identity_l1"] > 0.01 and scores["BtoA_identity_ssim"] < 1
    with pytest.raises(ValueError, match="not these inputs' translations"):
        translation()(perfect[:-1], data, inputs=inputs)


# ------------------------------------------------------------------ training, pictures, translate
def test_mnist_edges_pix2pix_trains_shows_rows_and_translates(tmp_path, digits, run_cli):
    run = tmp_path / "run"
    code, out, err = run_cli("train", "mnist_edges_pix2pix", f"out_dir={run}", f"data.root={digits}", *TINY_P2P,
                             *QUICK, "train.steps=4")
    assert code == 0, err
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval/mnist_translation/AtoB_ssim" in r]
    assert evals and "eval/mnist_translation/AtoB_identity_class_preserved" in evals[-1]
    # the grid: 8 examples per row, rows of input | output | target (32 examples: 4 blocks)
    with Image.open(run / "samples-final.png") as img:
        assert img.size == (2 + 8 * 34, 2 + 4 * 3 * 34)
    code, out, err = run_cli("translate", run, "--out", tmp_path / "held")
    assert code == 0, err
    written = sorted((tmp_path / "held").glob("*.png"))
    assert len(written) == 40 and Image.open(written[0]).size == (32, 32)  # the held-out split (40 test digits)
    import ganforge  # the Python API translates as the CLI does (its PNGs: 8 bits)

    loaded = ganforge.load_run(run)
    mine = (loaded.translate(loaded.system.held_out().a[:1]) + 1) / 2
    png = torch.from_numpy(np.asarray(Image.open(written[0]).convert("L"), dtype=np.float32) / 255)  # (saved as RGB)
    assert mine.shape == (1, 1, 32, 32) and (mine[0, 0] - png).abs().max() <= 0.5 / 255 + 1e-6
    # a folder of images keeps its relative names
    (tmp_path / "mine" / "sub").mkdir(parents=True)
    Image.new("L", (28, 28), 200).save(tmp_path / "mine" / "sub" / "one.png")
    code, out, err = run_cli("translate", run, "--input", tmp_path / "mine", "--out", tmp_path / "mine_out")
    assert code == 0 and (tmp_path / "mine_out" / "sub" / "one.png").is_file()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "bad.png").write_bytes(b"not a png")
    code, _, err = run_cli("translate", run, "--input", tmp_path / "broken", "--out", tmp_path / "b_out")
    assert code == 2 and "bad.png: cannot read this image" in err and err.count("\n") == 1
    code, _, err = run_cli("translate", run, "--out", tmp_path / "x", "--direction", "BtoA")
    assert code == 2 and "this run translates AtoB" in err
    code, _, err = run_cli("eval", run, "--n", "8")
    assert code == 0 and "AtoB_ssim" in _


def test_cyclegan_translates_both_ways_and_refuses_non_translation_runs(tmp_path, digits, run_cli):
    run = tmp_path / "run"
    code, _, err = run_cli("train", "mnist_thick_cyclegan", f"out_dir={run}", f"data.root={digits}", *TINY_CYC,
                           *QUICK, "train.steps=2")
    assert code == 0, err
    # A: rows of a, G_AB(a), G_BA(G_AB(a)), target; then B. 20 held-out images per domain: 3
    # blocks of 8 each (the last padded, so that every block starts a row)
    with Image.open(run / "samples-final.png") as img:
        assert img.size == (2 + 8 * 34, 2 + 2 * 3 * 4 * 34)
    for direction in ("AtoB", "BtoA"):
        code, _, err = run_cli("translate", run, "--out", tmp_path / direction, "--direction", direction)
        assert code == 0 and len(list((tmp_path / direction).glob("*.png"))) == 20
    code, _, err = run_cli("sample", run, "--out", tmp_path / "s.npz", "--n", "6")
    assert code == 0 and np.load(tmp_path / "s.npz")["samples"].shape == (12, 1, 32, 32)  # both directions
    toy = tmp_path / "toy"
    assert run_cli("train", "toy_grid", f"out_dir={toy}", "train.steps=2", *QUICK, "metrics=[]")[0] == 0
    code, _, err = run_cli("translate", toy, "--out", tmp_path / "t")
    assert code == 2 and "needs an image-to-image run" in err


@pytest.mark.parametrize("recipe", ["facades_pix2pix", "horse2zebra_cyclegan"])
def test_paper_recipes_run_on_a_tiny_generated_folder(tmp_path, recipe, run_cli):
    root = tmp_path / "data"
    if recipe == "facades_pix2pix":
        _write_pairs(root / "train", n=4, size=36)
        _write_pairs(root / "val", n=2, size=36, seed=1)
        small = ["data.args={size: 32, load_size: 36}", "generator.args.ngf=4", "discriminator.args.ndf=4"]
    else:
        for d, n in (("trainA", 4), ("trainB", 3), ("testA", 2), ("testB", 2)):
            _write_pairs(root / d, n=n, size=18)  # (any picture: 36x18 A|B images, resized to squares)
        small = ["data.args={size: 32, load_size: 36}", "generator.args={ngf: 4, blocks: 1}",
                 "discriminator.args.ndf=4", "data.batch_size=1"]
    recipe_cfg = load_recipe(recipe, [f"data.root={root}"])
    assert recipe_cfg.optim.lr_decay == "linear" and recipe_cfg.optim.lr_decay_start == 0.5
    code, _, err = run_cli("train", recipe, f"data.root={root}", f"out_dir={tmp_path / 'run'}", *small, *QUICK,
                           "train.steps=2", "data.num_workers=0", "train.cpu=true")
    assert code == 0, err
    assert (tmp_path / "run" / "samples-final.png").is_file()
    assert any("loss_g" in r for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())


def test_networks_that_do_not_fit_the_objective_are_one_clear_line(tmp_path, digits, run_cli):
    base = ["train", "mnist_edges_pix2pix", f"data.root={digits}", "train.steps=2", *QUICK]
    code, _, err = run_cli(*base, f"out_dir={tmp_path / 'a'}", "generator=dcgan")
    assert code == 2 and "generator 'dcgan' needs z_dim, which neither objective 'pix2pix'" in err
    assert "it gives in_shape, out_shape" in err and err.count("\n") == 1
    code, _, err = run_cli(*base, f"out_dir={tmp_path / 'b'}", "objective=unconditional")
    assert code == 2 and "generator 'unet' needs in_shape" in err and err.count("\n") == 1
    code, _, err = run_cli(*base, f"out_dir={tmp_path / 'c'}", "generator.args.ngf=0")
    assert code == 2 and "ngf is a number of channels >= 1, got 0" in err
    assert not (tmp_path / "c" / "checkpoints").exists()


def test_pix2pix_tests_as_the_paper_and_sampling_changes_nothing_in_training():
    """Issue #27: pix2pix's paper keeps dropout and uses the batch's statistics at test time
    (test_mode train, the default); eval mode is a choice. Making samples that way leaves the
    BatchNorm running statistics and counters, the modes and the random streams as they were."""
    import torch
    from torch import nn

    from ganforge.plugins.translation.pix2pix import Pix2Pix
    from ganforge.observe.sampling import sampling_mode

    import inspect

    assert inspect.signature(Pix2Pix).parameters["test_mode"].default == "train"
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 2))
    net.train()
    net(torch.randn(16, 4))  # some running statistics
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(32, 4) * 3 + 1
    system = type("S", (), {"test_mode": "train"})()
    rng = torch.get_rng_state()
    with torch.no_grad(), sampling_mode(system, {"G": net}):
        assert net.training and net[1].momentum == 0.0
        a, b = net(x), net(x)
    assert not torch.equal(a, b)  # dropout is on
    assert torch.equal(torch.get_rng_state(), rng) and net.training and net[1].momentum == 0.1
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k  # running mean/var and num_batches_tracked untouched
    with torch.no_grad():  # and the batch's statistics were used, not the running ones
        net.eval()
        running = net(x)
        net.train()
    assert not torch.allclose(running, a)
    system.test_mode = "eval"
    with torch.no_grad(), sampling_mode(system, {"G": net}):
        assert not net.training
        assert torch.equal(net(x), net(x)) and torch.equal(net(x), running)
    assert net.training
    system.test_mode = "sideways"
    with pytest.raises(ValueError, match="test_mode is 'eval' or 'train'"):
        with sampling_mode(system, {"G": net}):
            pass
