"""StyleGAN2 (issue #36): each mechanic against values worked out by hand, in fp32 and bf16, and
the system training, resuming bitwise and running on the fast path like the eager step."""
import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import ganforge
from ganforge.plugins.image.stylegan2 import (Conv2dLayer, FullyConnected, Mapping, minibatch_stddev,
                                              modulated_conv2d, style_mix, stylegan2_discriminator,
                                              stylegan2_generator, truncate)
from ganforge.plugins.penalties import PathLength

QUICK = ["log.progress=false", "log.sample_every=0", "log.film_every=0", "log.animate=false", "metrics=[]"]
TINY = ["generator.args={w_dim: 16, map: 2, fmaps: 0.0078125, channel_max: 8}",
        "discriminator.args={fmaps: 0.0078125, channel_max: 8, mbstd_group: 4}", "train.z_dim=16",
        "data.batch_size=8", "log.every=1"]


def test_demodulation_gives_unit_variance_outputs_for_unit_variance_inputs(precision):
    torch.manual_seed(0)
    x = torch.randn(4, 32, 16, 16)
    weight = torch.randn(48, 32, 3, 3)
    styles = torch.rand(4, 32) * 2 + 0.1
    with precision.autocast():
        out = modulated_conv2d(x, weight, styles, demodulate=True, fused=False)
    assert out.dtype == precision.dtype
    # each output channel's weight has unit L2 norm after modulation: var(out) = 1 for iid N(0,1) inputs
    inner = out.float()[:, :, 1:-1, 1:-1]  # (the zero-padded border sees fewer inputs)
    assert inner.var().item() == pytest.approx(1.0, abs=0.05)
    reference = modulated_conv2d(x, weight, styles, demodulate=True, fused=False)
    assert torch.allclose(out.float(), reference, atol=0.05 if precision.name == "bf16" else 1e-5)


def test_fused_and_non_fused_modulated_convolutions_agree_in_fp32():
    torch.manual_seed(1)
    x, weight, styles = torch.randn(3, 8, 9, 9), torch.randn(5, 8, 3, 3), torch.randn(3, 8)
    for demodulate, padding, k in ((True, 1, 3), (False, 0, 1)):
        w = weight[:, :, :k, :k].contiguous()
        a = modulated_conv2d(x, w, styles, demodulate, padding, fused=True)
        b = modulated_conv2d(x, w, styles, demodulate, padding, fused=False)
        assert (a - b).abs().max() < 1e-5
        by_hand = torch.stack([F.conv2d(x[i:i + 1], w * styles[i][None, :, None, None], padding=padding)[0]
                               for i in range(3)])
        if demodulate:
            d = (w[None] * styles[:, None, :, None, None]).square().sum([2, 3, 4]).add(1e-8).rsqrt()
            by_hand = by_hand * d[:, :, None, None]
        assert (a - by_hand).abs().max() < 1e-5


@pytest.mark.parametrize("fused", [False, True])
def test_the_up_layer_is_the_references_transposed_convolution_border_included(precision, fused):
    """stylegan2-ada-pytorch's up layer (conv2d_resample, up=2, flip_weight=False): a stride-2
    transposed convolution by the weight, then the [1,3,3,1] filter with gain 4 and padding 1.
    So the kernel acts as a true convolution (flipped against F.conv2d), and the border pixels
    read the filter's spill, not zero padding: the layer is shift-invariant over the whole
    plane (a zero-padded input gives the same image, cropped)."""
    from ganforge.layers import lowpass_2x
    from ganforge.plugins.image.stylegan2 import SynthesisLayer, blur

    torch.manual_seed(3)
    layer = SynthesisLayer(6, 5, 8, 16, up=True, fused=fused)
    with torch.no_grad():
        layer.bias.normal_()
    x, w = torch.randn(2, 6, 8, 8), torch.randn(2, 8)
    with torch.no_grad():
        styles = layer.affine(w)
        t = F.conv_transpose2d(x * styles[:, :, None, None], layer.weight.transpose(0, 1), stride=2)  # 2H+1
        y = blur(t, lowpass_2x(), (1, 1, 1, 1), gain=4.0)  # 2H
        d = (layer.weight[None] * styles[:, None, :, None, None]).square().sum([2, 3, 4]).add(1e-8).rsqrt()
        by_hand = F.leaky_relu(y * d[:, :, None, None] + layer.bias[None, :, None, None], 0.2) * math.sqrt(2)
        with precision.autocast():
            out = layer(x, w, noise_mode="none").float()
            wider = layer(F.pad(x, (2, 2, 2, 2)), w, noise_mode="none").float()[:, :, 4:-4, 4:-4]
    tol = 0.1 if precision.name == "bf16" else 1e-5
    assert out.shape == (2, 5, 16, 16)
    assert (out - by_hand).abs().max() < tol
    assert (out - wider).abs().max() < tol


def test_equalized_learning_rate_gains():
    fc = FullyConnected(50, 7, lr_mult=0.01, bias_init=1.0)
    x = torch.randn(3, 50)
    assert fc.weight_gain == pytest.approx(0.01 / math.sqrt(50)) and fc.bias_gain == 0.01
    assert torch.allclose(fc(x), x @ (fc.weight * 0.01 / math.sqrt(50)).t() + fc.bias * 0.01, atol=1e-6)
    assert fc.weight.std().item() == pytest.approx(100, rel=0.2)  # stored N(0, 1) / lr_mult
    conv = Conv2dLayer(6, 4, 3)
    y = torch.randn(2, 6, 5, 5)
    assert torch.allclose(conv(y), F.conv2d(y, conv.weight / math.sqrt(6 * 9), conv.bias, padding=1), atol=1e-6)


def test_truncation_psi_1_is_the_identity_and_psi_0_gives_w_avg(precision):
    torch.manual_seed(2)
    G = stylegan2_generator(z_dim=8, out_shape=(1, 8, 8), w_dim=8, map=2, fmaps=0.001, channel_max=4).eval()
    G.mapping.w_avg.copy_(torch.randn(8))
    z = torch.randn(5, 8)
    ws = G.mapping(z)
    assert torch.equal(truncate(ws, G.mapping.w_avg, 1.0), ws)
    assert torch.allclose(truncate(ws, G.mapping.w_avg, 0.0), G.mapping.w_avg.expand_as(ws))
    assert torch.allclose(truncate(ws, G.mapping.w_avg, 0.5), (ws + G.mapping.w_avg) / 2, atol=1e-6)
    with precision.autocast():
        images = G(z, psi=0.0)  # every z maps to w_avg: one image (noise const in eval mode)
        assert G.mapping(z).dtype == torch.float32  # (the mapping runs in fp32)
    assert torch.allclose(images, images[:1].expand_as(images), atol=1e-6)
    assert torch.equal(G(z, psi=1.0), G(z))


def test_the_mixing_crossover_takes_the_second_styles_from_a_random_layer():
    ws, other = torch.zeros(2, 8, 3), torch.ones(2, 8, 3)
    assert torch.equal(style_mix(ws, other, 0.0), ws)
    cutoffs = []
    for _ in range(400):
        mixed = style_mix(ws, other, 1.0)
        layers = mixed[0, :, 0]
        cutoff = int((layers == 0).sum())
        assert torch.equal(layers, (torch.arange(8) >= cutoff).float())  # before: these, from it: the others
        assert torch.equal(mixed[0], mixed[1])  # one crossover for the batch
        cutoffs.append(cutoff)
    assert set(cutoffs) == set(range(1, 8))  # uniform over [1, num_ws)
    frac = sum(style_mix(ws, other, 0.9)[0, -1, 0].item() for _ in range(1000)) / 1000
    assert frac == pytest.approx(0.9, abs=0.04)


def test_w_avg_moves_towards_the_batch_mean_with_beta_0995():
    torch.manual_seed(3)
    m = Mapping(z_dim=4, c_dim=0, w_dim=4, num_ws=3, layers=2)
    m.w_avg.copy_(torch.ones(4))
    z = torch.randn(6, 4)
    w = m(z)[:, 0]
    assert torch.equal(m.w_avg, torch.ones(4))  # not without update_w_avg
    m(z, update_w_avg=True)
    assert torch.allclose(m.w_avg, 0.995 * torch.ones(4) + 0.005 * w.mean(0), atol=1e-6)


def test_path_length_on_w_by_hand():
    """A synthesis f(ws) = sum_l A_l ws_l: the Jacobian is known, so the length per sample is
    sqrt(mean over layers of |A_l^T y|^2), StyleGAN2's pl_grads.square().sum(2).mean(1).sqrt()."""
    torch.manual_seed(4)
    A = torch.randn(3, 5, 4)  # layers, pixels, w_dim

    def synthesis(ws):
        return torch.einsum("lpw,nlw->np", A, ws).reshape(-1, 1, 1, 5)

    penalty = PathLength(decay=0.01, shrink=2)
    ws = torch.randn(8, 3, 4)
    torch.manual_seed(5)
    value = penalty(synthesis, (), (ws,))
    torch.manual_seed(5)
    y = torch.randn(4, 1, 1, 5) / math.sqrt(5)  # (the penalty draws y as it does: same seed)
    grads = torch.einsum("lpw,np->nlw", A, y.reshape(4, 5))
    lengths = grads.square().sum(2).mean(1).sqrt()
    mean = 0.01 * lengths.mean()  # from 0
    assert penalty.mean.item() == pytest.approx(mean.item(), rel=1e-5)
    assert value.item() == pytest.approx((lengths - mean).square().mean().item(), rel=1e-5)


def test_minibatch_stddev_by_hand(precision):
    x = torch.arange(2 * 4 * 2 * 2, dtype=torch.float32).reshape(2, 4, 2, 2) / 10
    with precision.autocast():
        out = minibatch_stddev(x.to(precision.dtype), group_size=2, channels=1)
    sd = (x.var(dim=0, unbiased=False) + 1e-8).sqrt().mean()  # over the group of 2, averaged
    assert out.shape == (2, 5, 2, 2) and torch.allclose(out[:, 4].float(), sd.expand(2, 2, 2), rtol=1e-2)
    with pytest.raises(ValueError, match="must be a multiple of mbstd_group"):
        minibatch_stddev(torch.zeros(6, 4, 2, 2), 4, 1)


def test_the_discriminator_conditions_by_projection_and_halves_exactly():
    D = stylegan2_discriminator(in_shape=(3, 16, 16), num_classes=5, fmaps=0.002, channel_max=8)
    x = torch.randn(4, 3, 16, 16)
    out = D(x, torch.tensor([0, 1, 2, 3]))
    assert out.shape == (4, 1)
    assert not torch.allclose(out, D(x, torch.tensor([4, 4, 4, 4])))  # the label changes the logit
    G = stylegan2_generator(z_dim=8, out_shape=(3, 16, 16), num_classes=5, w_dim=8, map=1, fmaps=0.002,
                            channel_max=8)
    assert G(torch.randn(2, 8), torch.tensor([0, 4])).shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match="map must be >= 1 with conditioning"):
        stylegan2_generator(z_dim=8, out_shape=(3, 16, 16), num_classes=5, map=0)


def _mnist32(mnist_dir):
    return [f"data.root={mnist_dir}", *TINY, *QUICK]


def test_stylegan2_trains_with_lazy_corrections_and_resumes_bitwise_with_w_avg_and_the_path_length_mean(
        tmp_path, mnist_dir):
    base = [*_mnist32(mnist_dir), "train.precision=no", "penalties=[{name: r1, weight: 0.01, every: 2}, "
            "{name: path_length, weight: 2, every: 2}]", "log.eval_every=0"]
    state = ganforge.train("mnist_stylegan2", [*base, "train.steps=4", f"out_dir={tmp_path / 'a'}"])
    g_opt, d_opt = state.optimizers["G"].param_groups[0], state.optimizers["D"].param_groups[0]
    assert g_opt["lr"] == pytest.approx(0.0025 * 4 / 5) and d_opt["lr"] == pytest.approx(0.0025 * 16 / 17)
    assert g_opt["betas"][1] == pytest.approx(0.99 ** 0.8) and d_opt["betas"][1] == pytest.approx(0.99 ** (16 / 17))
    rows = [json.loads(r) for r in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert any("penalty_path_length" in r for r in rows) and any("penalty_r1" in r for r in rows)
    assert state.system.network("G").mapping.w_avg.abs().sum() > 0  # moved from zeros
    ganforge.train("mnist_stylegan2", [*base, "train.steps=2", f"out_dir={tmp_path / 'b'}", "log.checkpoint_every=2"])
    resumed = ganforge.train("mnist_stylegan2", [*base, "train.steps=4", f"out_dir={tmp_path / 'b'}", "resume=auto"])
    for name in ("model.G", "model.D", "ema.G"):
        one, two = (load_file(str(s.last_checkpoint / f"{name}.safetensors")) for s in (state, resumed))
        assert one.keys() == two.keys() and all(torch.equal(one[k], two[k]) for k in one), name
    assert "mapping.w_avg" in load_file(str(state.last_checkpoint / "model.G.safetensors"))
    pl = [p for _, p in state.penalties if isinstance(p, PathLength)][0]
    pl_resumed = [p for _, p in resumed.penalties if isinstance(p, PathLength)][0]
    assert pl.mean.item() > 0 and torch.equal(pl.mean, pl_resumed.mean)


def test_the_graph_step_trains_stylegan2_like_the_eager_step(tmp_path, monkeypatch, mnist_dir):
    from test_fastpath import _assert_same_run, _train

    overrides = [*_mnist32(mnist_dir), "train.steps=4", "log.checkpoint_every=2", "train.precision=no",
                 "log.eval_every=0", "optim.fused=true",
                 "penalties=[{name: r1, weight: 0.01, every: 2}, {name: path_length, every: 2}]"]
    eager = _train(tmp_path / "eager", monkeypatch, False, "mnist_stylegan2", overrides)
    graph = _train(tmp_path / "graph", monkeypatch, True, "mnist_stylegan2", overrides)
    _assert_same_run(eager, graph, tmp_path / "eager", tmp_path / "graph")


def test_a_conditional_stylegan2_truncates_towards_each_classs_mean_w(tmp_path, mnist_dir):
    ganforge.train("mnist_stylegan2_cond", [*_mnist32(mnist_dir), "train.steps=2", f"out_dir={tmp_path}"])
    run = ganforge.load_run(tmp_path)
    G, system = run.network("G"), run.system
    c = torch.tensor([3, 3, 7])
    w3 = system.class_w_avg(G, c)
    assert w3.shape == (3, 16) and torch.equal(w3[0], w3[1]) and not torch.equal(w3[0], w3[2])
    z = torch.randn(3, 16)
    with torch.no_grad():
        at_mean = system.generate(run.nets, (z, c), truncation=0.0)
        direct = G.synthesis(w3[:, None].repeat(1, G.num_ws, 1), "const")
    assert torch.allclose(at_mean, direct, atol=1e-5)
    samples = run.generate(4, seed=0, labels=3, truncation=0.5)
    assert samples.shape == (4, 1, 32, 32)


def test_stylegan2s_bad_inputs_are_one_line(tmp_path, mnist_dir, run_cli):
    code, _, err = run_cli("train", "mnist_stylegan2", f"data.root={mnist_dir}", *TINY, *QUICK, "train.steps=1",
                           "data.args={}", f"out_dir={tmp_path / 'a'}")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "power-of-two image size >= 8, got 28 (MNIST: data.args.pad=2 gives 32x32)" in err
    code, _, err = run_cli("train", "mnist_stylegan2", f"data.root={mnist_dir}", *TINY, *QUICK, "train.steps=1",
                           "generator=mlp", f"out_dir={tmp_path / 'b'}")
    assert code == 2 and "stylegan2 needs a generator with a mapping and a synthesis network" in err
    ganforge.train("mnist_stylegan2", [*_mnist32(mnist_dir), "train.steps=1", f"out_dir={tmp_path / 'c'}"])
    run = ganforge.load_run(tmp_path / "c")
    with pytest.raises(ganforge.GanforgeError, match=r"truncation is psi in \[0, 1\] \(1: none, 0: the mean w\), got 1.5"):
        run.generate(2, truncation=1.5)
    assert torch.equal(run.generate(3, truncation=1.0), run.generate(3))
    code, _, err = run_cli("sample", tmp_path / "c", "--truncation", "-0.1", "--out", tmp_path / "x.png")
    assert code == 2 and "truncation is psi in [0, 1]" in err and not (tmp_path / "x.png").exists()
    ganforge.train("toy_grid", ["train.steps=1", f"out_dir={tmp_path / 'toy'}", *QUICK])
    code, _, err = run_cli("sample", tmp_path / "toy", "--truncation", "0.7", "--out", tmp_path / "y.png")
    assert code == 2 and "truncation needs a run with a W space (objective stylegan2); this run's objective is " \
                         "'unconditional'" in err


def test_the_readmes_stylegan2_commands_run_as_written(tmp_path):
    """Each line of README's StyleGAN2 block, in a folder beside a generated ../shared/data/mnist:
    the recipe trains (shortened by overrides appended), and sample --truncation writes its grid."""
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    from conftest import make_mnist_like

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = text[text.index("## StyleGAN2\n"):]
    code = block[block.index("```bash") + 7:]
    commands = [line.split("#")[0].strip() for line in code[:code.index("```")].strip().splitlines()]
    assert [c.split()[1] for c in commands] == ["train", "sample", "sample", "directions", "project"]
    make_mnist_like(make_mnist_like(tmp_path / "shared" / "data" / "mnist", n=64), n=64, split="test")
    work = tmp_path / "work"
    work.mkdir()
    from PIL import Image

    Image.new("L", (32, 32)).save(work / "my_digit.png")
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    for command in commands:
        command = re.sub(r"^\.venv/bin/", f"{os.path.dirname(sys.executable)}/", command)
        if " train " in f" {command} ":
            command += " train.steps=2 metrics=[] " + " ".join(f"'{o}'" for o in [*TINY, *QUICK])
        if " project " in f" {command} ":
            command += " --steps 5"  # (1,000 by default)
        proc = subprocess.run(command, shell=True, cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, (command, proc.stderr[-3000:])
    assert all((work / f).is_file() for f in ("truncated.png", "mixing.png", "directions.png",
                                              "projected/my_digit.safetensors"))


def test_sefa_directions_are_the_top_eigenvectors_of_the_stacked_style_affines(tmp_path, mnist_dir, run_cli):
    ganforge.train("mnist_stylegan2", [*_mnist32(mnist_dir), "train.steps=1", f"out_dir={tmp_path / 'run'}"])
    run = ganforge.load_run(tmp_path / "run")
    dirs, sigmas = run.directions(3)
    G = run.network("G")
    from ganforge.plugins.image.stylegan2 import SynthesisLayer, ToRGB

    A = torch.cat([m.affine.weight * m.affine.weight_gain for m in G.synthesis.modules()
                   if isinstance(m, (SynthesisLayer, ToRGB))])
    values = torch.linalg.eigvalsh(A.t() @ A).flip(0)[:3]
    assert dirs.shape == (3, 16) and torch.allclose(dirs @ dirs.t(), torch.eye(3), atol=1e-5)
    assert torch.allclose((A @ dirs.t()).square().sum(0), values, rtol=1e-4)  # |A d|^2 = the eigenvalues, largest first
    assert (sigmas > 0).all()
    images = run.direction_grid(3, steps=5)
    assert images.shape == (15, 1, 32, 32)
    assert torch.allclose(images[2], images[7], atol=1e-5)  # the middle column is the unedited image in every row
    assert not torch.allclose(images[0], images[4])
    code, out, err = run_cli("directions", tmp_path / "run", "--out", tmp_path / "dirs.png", "--k", "2")
    assert code == 0 and (tmp_path / "dirs.png").is_file(), err
    code, _, err = run_cli("directions", tmp_path / "run", "--out", tmp_path / "x.png", "--k", "99")
    assert code == 2 and "k is a number of directions in 1..16 (w_dim), got 99" in err
    code, _, err = run_cli("directions", tmp_path / "run", "--out", tmp_path / "x.png", "--label", "3")
    assert code == 2 and "a label needs a class-conditional run; this one has no classes" in err


def test_the_style_mixing_grid_takes_coarse_middle_and_fine_styles_from_the_rows(tmp_path, mnist_dir, run_cli):
    ganforge.train("mnist_stylegan2", [*_mnist32(mnist_dir), "train.steps=1", f"out_dir={tmp_path / 'run'}"])
    run = ganforge.load_run(tmp_path / "run")
    images = run.mixing_grid(2)
    assert images.shape == (3 * 7, 1, 32, 32)  # 3 columns: a corner (or row source), then 2 column sources
    assert torch.equal(images[0], torch.full_like(images[0], -1.0))
    G, system = run.network("G"), run.system
    cols, rows = system._ws(G, 2, 0, None), system._ws(G, 2, 1, None)
    with torch.no_grad():
        fine = torch.cat([cols[:1, :5], rows[1:2, 5:]], dim=1)  # row source 1's fine styles (the last third: layers 5-7)
        expected = G.synthesis(fine, "const")
    assert torch.allclose(images[3 * 6 + 1], expected[0], atol=1e-5)  # (the fine group's second row, first column)
    code, out, err = run_cli("sample", tmp_path / "run", "--mix", "--out", tmp_path / "mix.png")
    assert code == 0 and (tmp_path / "mix.png").is_file(), err
    ganforge.train("toy_grid", ["train.steps=1", f"out_dir={tmp_path / 'toy'}", *QUICK])
    code, _, err = run_cli("sample", tmp_path / "toy", "--mix", "--out", tmp_path / "m.png")
    assert code == 2 and "mixing grid needs a run with a W space (objective stylegan2); this run's objective is " \
                         "'unconditional'" in err
    code, _, err = run_cli("directions", tmp_path / "toy", "--out", tmp_path / "d.png")
    assert code == 2 and "direction grid needs a run with a W space" in err


def test_projection_pieces_by_hand():
    from ganforge.plugins.image.projection import noise_regularizer

    white = torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    smooth = F.avg_pool2d(F.pad(white, (1, 1, 1, 1), mode="circular"), 3, stride=1)
    assert noise_regularizer([white]) < 1e-4 < noise_regularizer([smooth])  # correlated noise is what it punishes


@pytest.mark.parametrize("distance", ["pixels", "discriminator", "mnist"])
def test_projection_recovers_an_image_the_generator_made(distance):
    """An image G made from some w is projected back: the reconstruction ends far closer to it
    than the mean image it starts from (W, 200 steps, tiny networks), with each distance."""
    from ganforge.plugins.image.projection import project

    torch.manual_seed(0)
    G = stylegan2_generator(z_dim=16, out_shape=(1, 32, 32), w_dim=16, map=2, fmaps=0.0078125, channel_max=8).eval()
    D = stylegan2_discriminator(in_shape=(1, 32, 32), fmaps=0.0078125, channel_max=8)
    with torch.no_grad():
        target = G(torch.randn(3, 16))
        mean_w = G.mapping(torch.randn(10000, 16))[:, :1].mean(0, keepdim=True)  # (where projection starts)
        start = G(ws=mean_w.expand(3, G.num_ws, 16))
    ws, recon, film, distances = project(G, target, steps=200, distance=distance, D=D, frames=5)
    assert ws.shape == (3, G.num_ws, 16) and torch.equal(ws[:, 0], ws[:, -1])  # W: one w for every layer
    assert len(film) == 6 and recon.shape == target.shape and len(distances) == 3
    before, after = (start - target).square().mean().item(), (recon - target).square().mean().item()
    assert after < 0.5 * before, (before, after)
    assert all(p.requires_grad for p in G.parameters())  # G left as it was


def test_ganforge_project_writes_latents_pictures_and_films_and_refuses_bad_images(tmp_path, mnist_dir, run_cli):
    from PIL import Image

    ganforge.train("mnist_stylegan2", [*_mnist32(mnist_dir), "train.steps=1", f"out_dir={tmp_path / 'run'}"])
    (tmp_path / "digits").mkdir()
    for i in range(2):
        Image.fromarray((torch.rand(32, 32) * 255).byte().numpy(), "L").save(tmp_path / "digits" / f"d{i}.png")
    code, out, err = run_cli("project", tmp_path / "run", "--image", tmp_path / "digits", "--out", tmp_path / "proj",
                             "--steps", "20", "--w-plus")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "proj").iterdir()) == ["d0.gif", "d0.png", "d0.safetensors", "d1.gif",
                                                                     "d1.png", "d1.safetensors"]
    assert load_file(str(tmp_path / "proj" / "d0.safetensors"))["ws"].shape == (8, 16)
    Image.fromarray((torch.rand(28, 28) * 255).byte().numpy(), "L").save(tmp_path / "digits" / "small.png")
    code, _, err = run_cli("project", tmp_path / "run", "--image", tmp_path / "digits", "--out", tmp_path / "p2")
    assert code == 2 and "small.png is 28x28 L, but this run makes 32x32 L (grey) images" in err
    assert not (tmp_path / "p2").exists()
    Image.new("RGB", (32, 32)).save(tmp_path / "rgb.png")
    code, _, err = run_cli("project", tmp_path / "run", "--image", tmp_path / "rgb.png", "--out", tmp_path / "p3")
    assert code == 2 and "is 32x32 RGB, but this run makes 32x32 L (grey) images" in err
    ganforge.train("toy_grid", ["train.steps=1", f"out_dir={tmp_path / 'toy'}", *QUICK])
    code, _, err = run_cli("project", tmp_path / "toy", "--image", tmp_path / "rgb.png", "--out", tmp_path / "p4")
    assert code == 2 and "project needs a run with a W space (objective stylegan2)" in err


def test_path_length_on_w_trains_the_mapping_network_too():
    """StyleGAN2 differentiates the penalty through w into the mapping network (a review found
    ours detached w: the mapping got no gradient from it)."""
    torch.manual_seed(6)
    G = stylegan2_generator(z_dim=8, out_shape=(1, 8, 8), w_dim=8, map=2, fmaps=0.001, channel_max=4)
    ws = G.mapping(torch.randn(4, 8))
    PathLength()(lambda w: G(ws=w), (), (ws,)).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in G.mapping.fcs.parameters())


DDP_SCRIPT = '''
import sys
import torch
from safetensors.torch import save_file
import ganforge

state = ganforge.train("mnist_stylegan2", sys.argv[1:])
out = {f"{n}.{k}": v for n in ("G", "D") for k, v in state.system.network(n).named_parameters()}
save_file({k: v.detach().contiguous() for k, v in out.items()},
          f"{state.output_dir}/rank{state.accelerator.process_index}.safetensors")
'''


@pytest.mark.slow
def test_stylegan2_trains_on_two_processes_with_style_mixing_and_path_length_on_w(tmp_path, mnist_dir):
    """2-process DDP (gloo on the CPU): G's forward in G's phase and the path-length penalty's
    second forward through G(ws=...) before one backward; both ranks end with the same weights."""
    import os
    import subprocess
    import sys

    script = tmp_path / "run.py"
    script.write_text(DDP_SCRIPT)
    env = dict(os.environ, ACCELERATE_USE_CPU="1", WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), *_mnist32(mnist_dir), "train.steps=4", f"out_dir={out}", "log.eval_every=0",
                           "penalties=[{name: r1, weight: 0.01, every: 2}, {name: path_length, weight: 2, every: 2}]"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = load_file(str(out / "rank0.safetensors")), load_file(str(out / "rank1.safetensors"))
    assert r0.keys() == r1.keys() and all(torch.equal(r0[k], r1[k]) for k in r0)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("penalty_path_length" in r for r in rows)


@pytest.mark.slow
@pytest.mark.parametrize("options", [["--demod", "off"], ["--generator", "dcgan_nobn"],
                                     ["--input", "latent", "--styles", "const", "--g-arch", "orig", "--noise", "none",
                                      "--d-arch", "orig"]])
def test_the_plain_loop_diagnosis_script_runs_each_mode_and_reports_its_scores(tmp_path, options):
    """benchmarks/stylegan2_plain_loop.py (RESULTS "StyleGAN2 and R3GAN"), on generated IDX files:
    it trains, scores the EMA generator and writes a JSON line and a grid per evaluation."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from conftest import make_mnist_like

    root = make_mnist_like(tmp_path / "mnist")
    make_mnist_like(root, split="test")
    out = tmp_path / "plain" / "a.jsonl"
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "stylegan2_plain_loop.py"
    proc = subprocess.run([sys.executable, str(script), "--root", str(root), "--out", str(out), "--steps", "2",
                           "--every", "1", "--batch", "8", *options], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(math.isfinite(r["frechet_distance"]) and 1 <= r["classifier_score"] <= 10 for r in rows)
    assert (tmp_path / "plain" / "a-2.png").is_file()
