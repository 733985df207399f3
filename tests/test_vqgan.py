"""The built-in vqgan system (plugins/image/vqgan.py): an encoder, a codebook, a decoder and a
PatchGAN, with VQGAN's adaptive weight and its late-starting discriminator (issue #37)."""
import json

import pytest
import torch
import torch.nn.functional as F

from ganforge.plugins.image.vqgan import VQGAN, VectorQuantizer, vq_decoder, vq_encoder

TINY = ["networks.E.args={width: 8, downs: 2}", "networks.G.args={width: 8, downs: 2}", "networks.Q.args={codes: 16}",
        "networks.D.args={ndf: 8, n_layers: 1}", "objective.args.code_dim=4", "data.batch_size=8",
        "log.progress=false", "log.sample_every=0", "log.every=1", "metrics=[]"]


def test_the_quantizer_picks_the_nearest_code_in_fp32_with_vq_vaes_losses(precision):
    torch.manual_seed(0)
    vq = VectorQuantizer(code_dim=3, codes=5, beta=0.25)
    with torch.no_grad():
        vq.codebook.weight.copy_(torch.randn(5, 3))
    z_e = torch.randn(2, 3, 4, 4, requires_grad=True)
    with precision.autocast():
        q = vq(z_e)
    flat = z_e.detach().permute(0, 2, 3, 1).reshape(-1, 3)
    expected = torch.cdist(flat, vq.codebook.weight.detach()).argmin(1).view(2, 4, 4)
    assert torch.equal(q.indices, expected)
    assert q.z.dtype == torch.float32 and q.loss.dtype == torch.float32  # (stated: fp32 under autocast)
    e = vq.codebook.weight.detach()[expected].permute(0, 3, 1, 2)
    assert torch.allclose(q.z.detach(), e, atol=1e-6)
    assert torch.allclose(q.loss, 1.25 * F.mse_loss(e, z_e.detach()), rtol=1e-5)
    q.z.sum().backward()  # straight-through: the encoder's gradient passes unchanged
    assert torch.equal(z_e.grad, torch.ones_like(z_e))


def _system(disc_start=0):
    from ganforge.plugins.losses import Hinge

    system = VQGAN(Hinge(), (1, 8, 8), None, dataset=None, code_dim=4, disc_start=disc_start, d_layers=1)
    nets = {"E": vq_encoder(in_shape=(1, 8, 8), code_dim=4, width=8, downs=1),
            "Q": VectorQuantizer(4, codes=8),
            "G": vq_decoder(out_shape=(1, 8, 8), code_dim=4, width=8, downs=1)}
    from ganforge.plugins.translation.patchgan import patchgan
    nets["D"] = patchgan(in_shape=(1, 8, 8), ndf=8, n_layers=1)
    system.check(nets)
    system.setup(nets)
    return system, nets


def test_the_adaptive_weight_is_vqgans_ratio_of_gradient_norms_at_the_named_layer(precision):
    torch.manual_seed(1)
    system, nets = _system()
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    with precision.autocast():
        recon = system.reconstruct(nets, x)[0]
        rec = (x.float() - recon.float()).abs().mean()
        adv = system.loss.g_loss(nets["D"](recon)).float()
        weight = system.adaptive_weight(rec, adv)
    last = nets["G"].conv_out.weight
    g_rec = torch.autograd.grad(rec, last, retain_graph=True)[0]
    g_adv = torch.autograd.grad(adv, last, retain_graph=True)[0]
    assert weight.dtype == torch.float32 and not weight.requires_grad
    assert torch.allclose(weight, 0.8 * g_rec.norm() / (g_adv.norm() + 1e-4), rtol=1e-5)
    # clamped to [0, 1e4] (times disc_weight): an adversarial term with no gradient there
    assert system.adaptive_weight(1e3 * rec, 0.0 * adv) == pytest.approx(0.8 * 1e4)


def test_the_network_accessor_reaches_a_layer_through_ddps_wrapper():
    system, nets = _system()

    class Wrapper(torch.nn.Module):  # what DDP looks like from outside: the network in .module
        def __init__(self, module):
            super().__init__()
            self.module = module

    from torch.nn.parallel import DistributedDataParallel

    wrapped = Wrapper(nets["G"])
    wrapped.__class__ = type("DDPLike", (DistributedDataParallel,), {})  # isinstance DDP, no process group
    system.setup({**nets, "G": wrapped})
    assert system.network("G") is nets["G"]
    with pytest.raises(KeyError, match="networks: E, Q, G, D"):
        system.network("F")


def test_vqgan_trains_with_its_discriminator_from_disc_start_and_resumes_bitwise(tmp_path, mnist_dir):
    """Phase D first runs at disc_start: before it, no D loss, no adversarial term, D unchanged;
    4 steps in one go == 2 steps, then resumed to 4 (fp32, bitwise)."""
    import ganforge
    from safetensors.torch import load_file

    base = ["data.root=" + str(mnist_dir), "log.eval_every=0", "train.precision=no", "phases.D.start=1", *TINY]
    state = ganforge.train("mnist_vqgan", [*base, "train.steps=4", f"out_dir={tmp_path / 'a'}"])
    rows = [json.loads(r) for r in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "loss_g" in r]
    assert [("loss_d" in r, "adaptive_weight" in r) for r in rows] == [(False, False)] + [(True, True)] * 3
    assert all(r["rec_l1"] > 0 and 1 <= r["perplexity"] <= 16 for r in rows)

    ganforge.train("mnist_vqgan", [*base, "train.steps=2", f"out_dir={tmp_path / 'b'}", "log.checkpoint_every=2"])
    resumed = ganforge.train("mnist_vqgan", [*base, "train.steps=4", f"out_dir={tmp_path / 'b'}", "resume=auto"])
    assert resumed.step == 4
    one, two = (load_file(s.last_checkpoint / "model.D.safetensors") for s in (state, resumed))
    assert one.keys() == two.keys() and all(torch.equal(one[k], two[k]) for k in one)
    one, two = (load_file(s.last_checkpoint / "model.E.safetensors") for s in (state, resumed))
    assert all(torch.equal(one[k], two[k]) for k in one)


def test_a_vqgan_run_encodes_and_decodes_from_python(tmp_path, mnist_dir, recwarn):
    import ganforge
    from conftest import make_mnist_like

    make_mnist_like(mnist_dir, n=64, split="test")

    ganforge.train("mnist_vqgan", [f"data.root={mnist_dir}", *TINY, "train.steps=2", f"out_dir={tmp_path}"])
    run = ganforge.load_run(tmp_path)
    images = torch.zeros(3, 1, 28, 28)
    codes = run.encode(images)
    assert codes.shape == (3, 7, 7) and codes.dtype == torch.int64 and int(codes.max()) < 16
    out = run.decode(codes)
    assert out.shape == (3, 1, 28, 28)
    with torch.no_grad():
        recon = run.system.reconstruct(run.nets, images)[0]
    assert (out - recon).abs().max() < 1e-4, (out - recon).abs().max()  # decode(encode(x)): the reconstruction
    samples = run.generate(4)  # reconstructions of the held-out (test split) digits
    assert samples.shape == (4, 1, 28, 28) and not [w for w in recwarn if "held-out" in str(w.message)]
    test_digits = ganforge.plugins.image.idx.mnist(root=str(mnist_dir), download=False, split="test").fetch(
        torch.arange(4))[0]
    assert torch.equal(run.system.noise(4), test_digits)
    with torch.no_grad():  # (generate may run under the run's bf16 autocast)
        assert torch.allclose(samples, run.system.reconstruct(run.nets, test_digits)[0], atol=0.05)
    with pytest.raises(ganforge.GanforgeError, match="vocode needs a vocoder run"):
        run.vocode(torch.zeros(100))


def test_vqgans_bad_settings_are_one_line(tmp_path, mnist_dir, run_cli):
    code, out, err = run_cli("train", "mnist_vqgan", f"data.root={mnist_dir}", *TINY, "train.steps=1",
                             f"out_dir={tmp_path / 'a'}", "objective.args.adaptive_layer=nope.weight")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "adaptive_layer 'nope.weight'" in err
    code, out, err = run_cli("train", "mnist_vqgan", f"data.root={mnist_dir}", *TINY, "train.steps=1",
                             f"out_dir={tmp_path / 'b'}", "networks.E.args={width: 8, downs: 3}")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "divisible by 8" in err
    assert not (tmp_path / "a" / "checkpoints").exists() and not (tmp_path / "b" / "checkpoints").exists()


def test_a_generator_or_discriminator_section_no_network_uses_is_refused(tmp_path, mnist_dir, run_cli):
    """Issue #37: a `generator:` section was silently ignored for a network the system builds
    from its own default part; now it is refused in one line that says where to set it."""
    code, out, err = run_cli("train", "mnist_vqgan", f"data.root={mnist_dir}", *TINY, "train.steps=1",
                             f"out_dir={tmp_path}", "discriminator={name: patchgan, args: {ndf: 16}}")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert ("the recipe's 'discriminator: patchgan' section is used by no network of objective 'vqgan': its "
            "discriminators (D) are each set under networks.<name>, e.g. networks: {D: {name: patchgan, args: "
            "{...}}}; 'ganforge plugins --args vqgan' lists its networks") in err
    code, out, err = run_cli("train", "mnist_vqgan", f"data.root={mnist_dir}", *TINY, "train.steps=1",
                             f"out_dir={tmp_path}", "generator=dcgan")
    assert code == 2 and "'generator: dcgan' section is used by no network of objective 'vqgan': it has no " \
                         "generator" in err
    assert not (tmp_path / "checkpoints").exists()
    # a system whose generator has no default part uses the section (the classic GAN)
    code, out, err = run_cli("train", "toy_grid", "train.steps=1", f"out_dir={tmp_path / 'toy'}",
                             "generator={name: mlp, args: {hidden: [8]}}", "log.progress=false", "metrics=[]")
    assert code == 0, err
