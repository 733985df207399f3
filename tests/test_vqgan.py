"""The built-in vqgan system (plugins/image/vqgan.py): an encoder, a codebook, a decoder and a
PatchGAN, with VQGAN's adaptive weight and its late-starting discriminator (issue #37)."""
import json
import re
from pathlib import Path

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

    from ganforge.recipe.types import Optim

    system = VQGAN(Hinge(), (1, 8, 8), Optim(), dataset=None, code_dim=4, disc_start=disc_start, d_layers=1)
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
    system.setup({**nets, "G": torch.compile(nets["G"])})  # (torch.compile's wrapper: compiled lazily, not here)
    assert system.network("G") is nets["G"]


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


GUIDE = Path(__file__).resolve().parent.parent / "docs" / "writing-plugins.md"


def test_the_guides_excerpts_of_vqgan_are_its_code():
    """docs/writing-plugins.md "Writing a system of several networks" quotes the module as it is."""
    repo = GUIDE.parent.parent
    excerpts = re.findall(r"```python excerpt=(\S+)\n(.*?)```", GUIDE.read_text(), re.S)
    assert len(excerpts) == 4
    for path, code in excerpts:
        assert code in (repo / path).read_text(), code[:80]


def test_the_guides_vqgan_recipe_and_python_run_as_written(tmp_path, mnist_dir, monkeypatch):
    """The section's recipe trains (on generated digits, tiny, 2 steps) from the folder it names,
    and its Python block runs as written on the run."""
    import ganforge
    from conftest import make_mnist_like

    make_mnist_like(mnist_dir, n=64, split="test")
    text = GUIDE.read_text()
    recipe = re.search(r"```yaml recipe=vqgan\n(.*?)```", text, re.S).group(1)
    code = re.search(r"```python run=vqgan\n(.*?)```", text, re.S).group(1)
    (tmp_path / "my_vqgan.yaml").write_text(recipe)
    monkeypatch.chdir(tmp_path)
    state = ganforge.train("my_vqgan.yaml", [f"data.root={mnist_dir}", "train.steps=3", *TINY[:-1]])
    assert state.output_dir == Path("runs/my_vqgan") and state.phase_steps == {"G": 3, "D": 2}
    assert state.optimizers["D"].param_groups[0]["lr"] == pytest.approx(1e-4)
    scope = {}
    exec(compile(code, "writing-plugins.md", "exec"), scope)  # noqa: S102
    assert scope["digits"].shape == (8, 1, 28, 28) and scope["codes"].shape == (4, 7, 7)
    assert scope["images"].shape == (4, 1, 28, 28) and scope["codebook"].shape == (16, 4)


def test_the_readmes_vqgan_commands_run_as_written(tmp_path):
    """Each line of README's autoencoder block, in a folder beside a generated ../shared/data/mnist
    (where the recipe looks): the recipe trains (shortened by overrides appended to the line), the
    catalogue shows its system, and the export's card encodes and decodes."""
    import os
    import subprocess
    import sys

    from conftest import make_mnist_like

    text = (GUIDE.parent.parent / "README.md").read_text()
    block = text[text.index("## Autoencoders: VQGAN's first stage"):]
    code = block[block.index("```bash") + 7:]
    commands = [line.split("#")[0].strip() for line in code[:code.index("```")].strip().splitlines()]
    assert [c.split()[1] for c in commands] == ["train", "plugins", "export"]
    make_mnist_like(make_mnist_like(tmp_path / "shared" / "data" / "mnist", n=64), n=64, split="test")
    work = tmp_path / "work"
    work.mkdir()
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    outputs = []
    for command in commands:
        command = re.sub(r"^\.venv/bin/", f"{os.path.dirname(sys.executable)}/", command)
        if " train " in f" {command} ":
            command += " train.steps=3 log.progress=false log.eval_samples=64 log.n_samples=16 " + " ".join(
                f"'{o}'" for o in TINY[:5])
        proc = subprocess.run(command, shell=True, cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, (command, proc.stderr[-3000:])
        outputs.append(proc.stdout)
    assert "E  encoder: default vq_encoder" in outputs[1]
    card = (work / "my_vqgan" / "README.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    ran = subprocess.run([sys.executable, "-c", snippet + "\nprint(tuple(codes.shape), tuple(decoded.shape))"],
                         cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0 and ran.stdout.strip() == "(4, 7, 7) (4, 1, 28, 28)", ran.stderr[-2000:]


def test_a_systems_own_fractional_phase_start_is_a_fraction_of_the_steps(tmp_path, mnist_dir):
    """The fresh-reader trial (issue #37): Phase(start=0.2) in a system's code ran D from step 1
    (as step 0.2); a float in [0, 1] is now a fraction of train.steps there too, as in a recipe."""
    import ganforge
    from ganforge.errors import ConfigError
    from ganforge.plugins.image import vqgan as module

    class Late(module.VQGAN):
        def __init__(self, *args, start=0.5, **kwargs):
            super().__init__(*args, **kwargs)
            self.phases[1].start = start

    class Plugin:
        @ganforge.hookimpl
        def ganforge_register_objectives(self, register):
            register("late_vqgan", lambda *, loss, sample_shape, optim, dataset, start=0.5, code_dim=64:
                     Late(loss, sample_shape, optim, dataset, code_dim=code_dim, d_layers=1, start=start))

    pm = ganforge.PluginManager()
    pm.register(Plugin(), name="late")
    state = ganforge.train("mnist_vqgan", [f"data.root={mnist_dir}", *TINY, "objective=late_vqgan", "phases={}", "train.steps=4",
                                           f"out_dir={tmp_path / 'a'}"], plugins=pm)
    assert state.phase_steps == {"G": 4, "D": 2}
    with pytest.raises(ConfigError, match=r"phase 'D' has start 1.5: a step is a whole number, and a fraction"):
        ganforge.train("mnist_vqgan", [f"data.root={mnist_dir}", *TINY, "objective=late_vqgan", "phases={}", "train.steps=4",
                                       "objective.args.start=1.5", f"out_dir={tmp_path / 'b'}"], plugins=pm)


def test_held_out_images_of_an_exports_stand_in_say_to_load_the_run():
    """The trial: sampling an export whose samples come from held-out data warned, then failed
    with 'stack expects a non-empty TensorList'."""
    import ganforge
    from ganforge.data import held_out_images
    from ganforge.run.loading import ExportedData

    with pytest.raises(ganforge.GanforgeError, match="an export holds the networks, not the data"):
        held_out_images(ExportedData({"sample_shape": [1, 28, 28]}, "denoise"), 4)
