"""The augment part kind: DiffAugment and ADA by hand, applied to every image a discriminator
sees while training, checkpointed, identical on the graph step (issue #25, item 5)."""
import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

import ganforge
from ganforge.training.augment_hooks import AugmentHooks
from ganforge.contract.recipes import load_recipe
from ganforge.training.engine import train
from ganforge.errors import GanforgeError
from ganforge.contract.manager import PluginManager
from ganforge.plugins.augment import ADA, DiffAugment, _cutout, _translation

QUICK = ["log.progress=false", "metrics=[]", "log.sample_every=0", "log.film_every=0", "log.animate=false"]
SMALL = ["data.batch_size=16", "generator.args.ngf=4", "discriminator.args.ndf=4", "log.every=2"]


def test_translation_shifts_whole_pixels_with_zeros_coming_in():
    torch.manual_seed(0)
    x = torch.rand(64, 2, 8, 8) + 1  # no zeros of its own
    out = _translation(x, None)
    for a, b in zip(x, out):
        shifts = [(dy, dx) for dy in range(-1, 2) for dx in range(-1, 2)
                  if torch.equal(b, _shift(a, dy, dx))]
        assert len(shifts) == 1  # exactly one shift within 1/8 of 8 pixels explains it
    assert any(not torch.equal(a, b) for a, b in zip(x, out))


def _shift(a, dy, dx):
    out = torch.zeros_like(a)
    h, w = a.shape[1:]
    out[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = a[:, max(-dy, 0):h - max(dy, 0),
                                                                     max(-dx, 0):w - max(dx, 0)]
    return out


def test_cutout_zeroes_one_square_of_half_the_size_at_most():
    torch.manual_seed(0)
    x = torch.rand(200, 1, 10, 10) + 1
    out = _cutout(x, None)
    zero = out == 0
    assert torch.equal(out[~zero], x[~zero])  # everything else untouched
    per_image = zero.flatten(1).sum(1)
    assert per_image.max() == 25 and per_image.min() >= 3 * 3  # 5x5, clipped at the borders (centre inside)
    rows, cols = zero[:, 0].any(2).sum(1), zero[:, 0].any(1).sum(1)
    assert torch.equal(per_image, rows * cols)  # a rectangle


@pytest.mark.parametrize("make", [lambda: DiffAugment(), lambda: ADA(p=1.0)])
def test_pairs_side_by_side_get_the_same_transform(make, precision):
    torch.manual_seed(1)
    x = (torch.rand(16, 3, 12, 12) * 2 - 1).to(precision.dtype)
    with precision.autocast():
        out = make()(torch.cat([x, x], 1), split=(3, 3))
    assert torch.equal(out[:, :3], out[:, 3:])
    assert not torch.allclose(out[:, :3], x)


@pytest.mark.parametrize("make", [lambda: DiffAugment(policy="color"), lambda: ADA(p=1.0)])
def test_unequal_pairs_get_the_same_transform_with_their_own_statistics(make, precision):
    """A grey input beside a colour output (1 + 3 channels): the old count of equal groups
    raised with 1 + 2 and mixed A's channel into B's colour transforms with 1 + 3. Each image
    now transforms as it would alone, with the same random draws."""
    torch.manual_seed(3)
    grey, colour = torch.rand(8, 1, 12, 12) * 2 - 1, torch.rand(8, 3, 12, 12) * 2 - 1
    for split in ((1, 2), (1, 3)):
        b = colour[:, :split[1]]
        aug = make()
        torch.manual_seed(4)
        with precision.autocast():
            out = aug(torch.cat([grey, b], 1), split=split)
        assert out.shape == (8, sum(split), 12, 12)
        torch.manual_seed(4)
        with precision.autocast():
            alone_b = aug(torch.cat([b, b], 1), split=(split[1], split[1]))[:, :split[1]]
        if isinstance(aug, DiffAugment):  # (ADA's draws depend on whether any image has colour)
            assert torch.allclose(out[:, 1:], alone_b, atol=1e-6)
        # the grey image's colour statistics are its own: its mean is not pulled towards B's
        grey_out = out[:, :1]
        assert not torch.allclose(grey_out.mean((1, 2, 3)), out[:, 1:].mean((1, 2, 3)), atol=1e-3)


@pytest.mark.parametrize("size", [16, 64])
def test_ada_with_p_zero_changes_nothing_and_with_p_one_changes_every_image(precision, size):
    """Issue #35: under bf16 autocast affine_grid multiplied in bf16 and blurred every image even
    at p = 0 (max |out - in| 0.21 at 32^2, 0.44 at 64^2). The geometry runs in fp32, and an image
    no transform fired for comes back bit for bit; a fired one moves far more than rounding."""
    torch.manual_seed(2)
    for x in ((torch.rand(32, 1, size, size) * 2 - 1), (torch.rand(32, 1, size, size) * 2 - 1).to(precision.dtype)):
        with precision.autocast():
            assert torch.equal(ADA(p=0.0)(x), x)
            moved = ADA(p=1.0)(x)
        assert moved.dtype == x.dtype and ((moved.float() - x.float()).abs().flatten(1).amax(1) > 1e-2).all()
        # the identity map resampled in fp32 returns the input to rounding, in either precision
        with precision.autocast():
            identity = F.grid_sample(x.float(), F.affine_grid(torch.eye(2, 3).expand(32, 2, 3), list(x.shape),
                                                              align_corners=False), align_corners=False)
        assert (identity - x.float()).abs().max() < 1e-5


def test_ada_adjusts_p_by_the_sign_of_rt_minus_target():
    ada = ADA(target=0.6, interval=2, kimg=0.1, p=0.5)  # 100 real images move p by 1
    p = ada.p
    ada.observe(torch.tensor([[1.0], [2.0], [-1.0], [3.0]]))  # signs 1, 1, -1, 1
    ada.update(1, lambda t: t)  # not an update step
    assert ada.p.item() == 0.5
    ada.update(2, lambda t: t * 2)  # two processes, the same statistics: rt 0.5 < 0.6, 8 images
    assert ada.rt.item() == 0.5 and ada.p.item() == pytest.approx(0.5 - 8 / 100)
    assert ada.p is p and ada.stats.sum() == 0  # in place (a captured step holds it), statistics reset
    ada.observe(torch.ones(3, 1, 4, 4))  # a PatchGAN's maps: one sign per image (its mean patch)
    ada.update(4, lambda t: t)
    assert ada.rt.item() == 1.0 and ada.p.item() == pytest.approx(0.42 + 3 / 100)
    ada.p.fill_(0.99)
    ada.observe(torch.ones(5, 1))
    ada.update(6, lambda t: t)
    assert ada.p.item() == 1.0  # clamped
    ada.observe(-torch.ones(200, 1))
    ada.update(8, lambda t: t)
    assert ada.rt.item() == -1.0 and ada.p.item() == 0.0


class Spy:
    """An augmentation that records what it is given and marks what it returns."""

    capturable = True

    def __init__(self):
        self.calls = []

    def __call__(self, x, split=None):
        self.calls.append((tuple(x.shape), split, torch.is_grad_enabled()))
        return x


def test_every_discriminator_call_in_training_is_augmented_and_no_other(tmp_path, mnist_dir):
    """Relativistic loss + R1 at n_critic 1: each step D judges real and fake (D phase), R1's
    reals, then G's fakes and (no grad) the reals again (G phase): 5 augmented calls."""
    spy = Spy()

    class Plugin:
        @ganforge.hookimpl
        def ganforge_register_augments(self, register):
            register("spy", lambda: spy)

    pm = PluginManager()
    pm.register(Plugin(), name="spy")
    state = train(load_recipe("mnist_dcgan", [f"out_dir={tmp_path}", f"data.root={mnist_dir}", "train.steps=3",
                                              "augment=spy", "loss=relativistic", "penalties=[{name: r1}]",
                                              *SMALL, *QUICK]), plugins=pm)
    assert len(spy.calls) == 3 * 5
    assert {c[0] for c in spy.calls} == {(16, 1, 28, 28)} and {c[1] for c in spy.calls} == {None}
    assert [c[2] for c in spy.calls[3:5]] == [True, False]  # G's fakes, then the constant reals
    D = state.nets["D"].eval()
    D(torch.zeros(2, 1, 28, 28))
    assert len(spy.calls) == 15  # eval mode (the film, a user's own call): not augmented


def test_a_pair_discriminator_is_augmented_as_pairs():
    class D(nn.Module):
        def forward(self, x, y=None):
            return x.mean((1, 2, 3))

    spy = Spy()
    nets = {"D": D()}
    aug = AugmentHooks(spy, nets, ["D"], split=(2, 4))
    nets["D"](torch.zeros(4, 6, 8, 8), torch.zeros(4))
    assert spy.calls[0][:2] == ((4, 6, 8, 8), (2, 4))
    aug.remove()
    nets["D"](torch.zeros(4, 6, 8, 8))
    assert len(spy.calls) == 1


def test_a_system_s_channel_split_is_checked_against_the_augmentation():
    from ganforge.errors import ConfigError
    from ganforge.training.augment_hooks import channel_split

    class Pairs:
        channel_split = (1, 3)

    class Old:
        images_per_input = 2

    def old_style(x, groups=1):
        return x

    assert channel_split(Pairs(), Spy(), "spy") == (1, 3)
    assert channel_split(object(), old_style, "old") is None  # one image: any augmentation
    with pytest.raises(ConfigError, match=r"augment 'old' takes no split argument.*channels \(1, 3\)"):
        channel_split(Pairs(), old_style, "old")
    with pytest.raises(ConfigError, match=r"images_per_input, which is now channel_split"):
        channel_split(Old(), Spy(), "spy")


def _rows(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_ada_p_is_logged_checkpointed_and_resumes_bitwise(tmp_path, mnist_dir):
    common = [f"data.root={mnist_dir}", "augment={name: ada, args: {interval: 2, kimg: 0.2}}",
              "penalties=[{name: r1, every: 2}]", "log.checkpoint_every=3", *SMALL, *QUICK]
    whole = train(load_recipe("mnist_dcgan", [f"out_dir={tmp_path / 'a'}", "train.steps=6", *common]))
    train(load_recipe("mnist_dcgan", [f"out_dir={tmp_path / 'b'}", "train.steps=3", *common]))
    resumed = train(load_recipe("mnist_dcgan", [f"out_dir={tmp_path / 'b'}", "train.steps=6", "resume=auto", *common]))
    p = whole.augment.augment.p
    assert 0 < p.item() <= 1 and torch.equal(p, resumed.augment.augment.p)
    saved = load_file(str(tmp_path / "a" / "checkpoints" / "step-00000003" / "augment.safetensors"))
    assert set(saved) == {"p", "rt", "stats"} and 0 <= saved["p"].item() <= 1
    for name in ("model.G", "model.D"):
        a = load_file(str(tmp_path / "a" / "checkpoints" / "step-00000006" / f"{name}.safetensors"))
        b = load_file(str(tmp_path / "b" / "checkpoints" / "step-00000006" / f"{name}.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a), name
    rows = _rows(tmp_path / "a")
    assert all("ada_p" in r and "ada_rt" in r for r in rows)


@pytest.mark.parametrize("overrides, message", [
    (["augment=diffaugment"], "augment 'diffaugment' transforms images (C, H, W), but this run's samples have shape (2,)"),
    (["augment=diffaug"], "Unknown augment 'diffaug'"),
    (["augment={name: diffaugment, args: {policy: 'color,blur'}}"], "diffaugment policy 'color,blur': unknown blur"),
    (["augment={name: ada, args: {target: 1.5}}"], "ada target is the E[sign(D(real))] to hold, in (0, 1)"),
    (["augment={name: ada, args: {speed: 2}}"], "speed"),
    (["augment.nmae=ada"], "Unknown recipe key 'augment.nmae'. Did you mean 'name'?"),
])
def test_bad_augment_settings_get_one_line(tmp_path, overrides, message):
    with pytest.raises(GanforgeError) as err:
        train(load_recipe("toy_grid", [f"out_dir={tmp_path}", *overrides, *QUICK]))
    assert message in str(err.value) and "\n" not in str(err.value)
    if "Unknown augment" in message:
        assert "Registered augments: ada, diffaugment" in str(err.value)


ADA_SCRIPT = """
import sys, torch
from safetensors.torch import save_file
from ganforge import load_recipe
from ganforge.training.engine import train
state = train(load_recipe("mnist_dcgan", sys.argv[1:]))
acc = state.accelerator
out = {"p": state.augment.augment.p.cpu().reshape(1), "rt": state.augment.augment.rt.cpu().reshape(1)}
out.update({f"D.{k}": v for k, v in acc.unwrap_model(state.nets["D"]).state_dict().items()})
save_file({k: v.contiguous() for k, v in out.items()}, f"{state.output_dir}/rank{acc.process_index}.safetensors")
"""


@pytest.mark.slow
def test_ada_p_agrees_across_two_processes_from_both_ranks_statistics(tmp_path, mnist_dir):
    """One update after 4 steps from p = 0.5: both ranks' 2 x 16 x 4 real images move p by
    128 / (kimg x 1000) = 0.128 (from one rank's alone it would move 0.064)."""
    import os
    import subprocess
    import sys

    script = tmp_path / "ada.py"
    script.write_text(ADA_SCRIPT)
    out = tmp_path / "run"
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           f"out_dir={out}", f"data.root={mnist_dir}", "train.steps=4",
           "augment={name: ada, args: {interval: 4, kimg: 1, p: 0.5}}", *SMALL, *QUICK]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [load_file(str(out / f"rank{r}.safetensors")) for r in (0, 1)]
    assert torch.equal(ranks[0]["p"], ranks[1]["p"]) and torch.equal(ranks[0]["rt"], ranks[1]["rt"])
    assert ranks[0]["p"].item() == pytest.approx(0.5 + (0.128 if ranks[0]["rt"].item() > 0.6 else -0.128))
    weights = [k for k in ranks[0] if k.startswith("D.") and "running" not in k and "num_batches" not in k]
    assert weights and all(torch.equal(ranks[0][k], ranks[1][k]) for k in weights)  # (BatchNorm statistics: per rank)


def test_a_discriminator_called_by_keyword_is_augmented_too():
    """Issue #35: the pre-hook looked at positional arguments only, so D(x=x) went unaugmented."""
    class D(nn.Module):
        def forward(self, x, y=None):
            return x.mean((1, 2, 3))

    spy = Spy()
    nets = {"D": D()}
    AugmentHooks(spy, nets, ["D"])
    nets["D"](x=torch.zeros(3, 1, 8, 8), y=torch.zeros(3))
    nets["D"](torch.zeros(5, 1, 8, 8))
    assert [c[0] for c in spy.calls] == [(3, 1, 8, 8), (5, 1, 8, 8)]


def test_ada_statistics_come_from_judged_reals_and_a_missing_call_is_an_error():
    """Terms.judged in its documented form (Judged) is read (it raised TypeError: 'Judged'
    object is not subscriptable); Judged.real_logits, which the built-in systems return, gives
    the statistics whatever tensor D was called on; without it, a phase that reports reals D
    was never called on (a converted copy) stops the run with one line instead of leaving p at
    0 without a word."""
    from ganforge.contract.system import Judged
    from ganforge.errors import GanforgeError

    class D(nn.Module):
        def forward(self, x):
            return x.mean((1, 2, 3))

    nets = {"D": D().train()}
    ada = ADA(p=0.0)
    hooks = AugmentHooks(ada, nets, ["D"])
    real, fake = torch.ones(4, 1, 8, 8), -torch.ones(4, 1, 8, 8)
    with hooks.watch():
        nets["D"](real), nets["D"](fake)
    hooks.observe({"D": Judged(real=(real,), fake=(fake,))})
    assert ada.stats.tolist() == [4.0, 4.0]  # sign(D(real)) = +1 for each of the 4 reals
    with hooks.watch():
        nets["D"](real.clone())  # the system judged a copy, not the tensor it reports
    with pytest.raises(GanforgeError, match=r"'D' was not called on that tensor"):
        hooks.observe({"D": (real, fake)})
    # the contract: a phase that hands over D's output on its reals needs no identity at all
    with hooks.watch():
        out = nets["D"](real.clone().float())  # a converted copy
    hooks.observe({"D": Judged(real=(real,), fake=(fake,), real_logits=out)})
    assert ada.stats.tolist() == [8.0, 8.0]
