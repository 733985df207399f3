"""Stacked MNIST (dataset and mode metric) and FID / IS / KID (issue #18).

The suite never needs the Inception weights: the metric's code runs on a small stand-in feature
network, and once through torch-fidelity's real Inception architecture with random weights.
"""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from conftest import SHARED_MNIST, make_mnist_like
from ganforge.training.batches import place_dataset
from ganforge.errors import GanforgeError
from ganforge.contract.manager import PluginManager

REG = PluginManager().registry
needs_mnist = pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="needs the real MNIST in ../shared/data/mnist; "
                                 "test_stacked_metric_on_generated_idx_files runs the same code")


def stacked(root, **args):
    return REG.build("dataset", "stacked_mnist", args, root=str(root), download=False)


# ------------------------------------------------------------------ Stacked MNIST
def test_stacked_dataset_draws_three_digits_per_image(mnist_dir):
    from ganforge.plugins.image.idx import mnist

    base = mnist(root=str(mnist_dir), download=False)
    d = stacked(mnist_dir, size=600, seed=3)
    assert len(d) == 600 and d.sample_shape == (3, 28, 28) and d.num_classes == 1000
    x, modes = d.fetch(torch.arange(600))
    assert x.shape == (600, 3, 28, 28) and x.min() >= -1 and x.max() <= 1
    for i in (0, 17, 599):  # each channel is one training digit, and the label is its mode id
        picks = [int(torch.nonzero((base.normalize(base.data[:, 0]) == x[i, c]).flatten(1).all(1))[0]) for c in range(3)]
        r, g, b = (int(base.labels[p]) for p in picks)
        assert int(modes[i]) == 100 * r + 10 * g + b
    assert torch.equal(stacked(mnist_dir, size=600, seed=3).data, d.data)  # the seed fixes the draw
    assert not torch.equal(stacked(mnist_dir, size=600, seed=4).data, d.data)
    r, g = modes // 100, modes // 10 % 10
    assert 0.03 < (r == g).float().mean() < 0.2  # channels independent: ~10% agree, not all
    with pytest.raises(GanforgeError, match="size is a number"):
        stacked(mnist_dir, size=0)


def test_mode_metrics_on_constructed_mode_ids():
    from ganforge.plugins.image.stacked_mnist import mode_metrics

    every = mode_metrics(torch.arange(1000).repeat(26))
    assert every["modes"] == 1000 and every["kl"] == pytest.approx(0.0, abs=1e-12)
    one = mode_metrics(torch.full((26000,), 417))
    assert one["modes"] == 1 and one["kl"] == pytest.approx(math.log(1000))
    half = mode_metrics(torch.arange(0, 1000, 2).repeat(4))
    assert half["modes"] == 500 and half["kl"] == pytest.approx(math.log(2))
    # each channel's own digit histogram: one mode is one digit in every channel; even ids
    # leave the blue channel only even digits and the other two uniform
    assert [one[k] for k in ("kl_r", "kl_g", "kl_b")] == pytest.approx([math.log(10)] * 3)
    assert [half[k] for k in ("kl_r", "kl_g", "kl_b")] == pytest.approx([0, 0, math.log(2)], abs=1e-12)
    fours = mode_metrics(torch.cat([torch.arange(1000), torch.full((1000,), 444)]))
    assert fours["kl_r"] == fours["kl_g"] == fours["kl_b"] > 0.1  # 444 doubles the 4s everywhere


def test_data_on_device_moves_every_tensor_a_dataset_indexes(mnist_dir):
    """Stacked MNIST's data is an index table into its digits: both must move to the device."""
    d = stacked(mnist_dir, size=50)
    place_dataset(d, True, SimpleNamespace(device=torch.device("meta")))
    assert {d.digits.device.type, d.data.device.type, d.labels.device.type} == {"meta"}
    x, y = d.fetch(torch.arange(4, device="meta"))
    assert x.shape == (4, 3, 28, 28) and x.device.type == "meta"


class BlobReader(nn.Module):
    """Reads the generated IDX digits exactly (the blob of label y starts at row 4 + 2y)."""

    def forward(self, x):
        rows = (x[:, 0] > 0).float().sum(2).argmax(1)
        return nn.functional.one_hot((rows - 4) // 2, 10).float()


def test_stacked_metric_on_generated_idx_files(tmp_path, monkeypatch):
    """The metric's own code (channel order, mode ids, the real reference), with a reader that
    is exact on generated digits in place of the shipped classifier."""
    from ganforge.plugins.image import stacked_mnist as sm
    from ganforge.plugins.image.idx import mnist

    root = make_mnist_like(tmp_path / "m", n=300)
    make_mnist_like(root, n=300, split="test")
    monkeypatch.setattr(sm, "load_classifier", BlobReader)
    d = stacked(root, size=3000, seed=1)
    metric = REG.build("metric", "stacked_mnist", {"n_real": 2000}, dataset=d)
    x, modes = d.fetch(torch.arange(3000))
    out = metric(x)
    assert out == pytest.approx({**sm.mode_metrics(modes), "modes_real": out["modes_real"], "kl_real": out["kl_real"]})
    assert 780 < out["modes_real"] < 950 and 0 < out["kl_real"] < 0.5  # 2000 draws reach ~865 modes
    # the reference reads each test digit once; reading the same 2000 stacks whole agrees
    test = mnist(root=str(root), download=False, split="test").data[:, 0]
    draws = torch.randint(len(test), (2000, 3), generator=torch.Generator().manual_seed(1))
    whole = sm.mode_metrics(metric.classify(test[draws].float().div(127.5).sub(1)))
    assert (whole["modes"], whole["kl"]) == (out["modes_real"], pytest.approx(out["kl_real"], abs=1e-12))
    assert metric(x[:1].expand(500, -1, -1, -1)) == pytest.approx(
        {"modes": 1.0, "kl": math.log(1000), "kl_r": math.log(10), "kl_g": math.log(10), "kl_b": math.log(10),
         "modes_real": out["modes_real"], "kl_real": out["kl_real"]})
    with pytest.raises(ValueError, match="3-channel samples"):
        metric(x[:, :1])
    with pytest.raises(GanforgeError, match="n_real is a number of real stacked test images"):
        REG.build("metric", "stacked_mnist", {"n_real": 0}, dataset=d)


@needs_mnist
def test_stacked_metric_reads_real_stacked_digits():
    from ganforge.plugins.image.stacked_mnist import mode_metrics

    d = stacked(SHARED_MNIST, size=4000, seed=5)
    metric = REG.build("metric", "stacked_mnist", {"n_real": 1000}, dataset=d)
    x, modes = d.fetch(torch.arange(4000))
    out, truth = metric(x), mode_metrics(modes)
    # the classifier reads >= 99% of digits right: what it finds is what the data has
    assert abs(out["modes"] - truth["modes"]) <= 10 and out["modes"] > 950
    assert out["kl"] == pytest.approx(truth["kl"], abs=0.03) and out["kl"] < 0.2
    one = metric(x[:1].expand(300, -1, -1, -1))
    assert one["modes"] == 1 and one["kl"] == pytest.approx(math.log(1000))


# ------------------------------------------------------------------ FID / IS / KID
def test_fid_closed_forms_and_torch_fidelity_agreement():
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    from ganforge.plugins.image.mnist_metrics import frechet_distance

    g = torch.Generator().manual_seed(0)
    a = torch.randn(2000, 32, generator=g, dtype=torch.float64) @ torch.randn(32, 32, generator=g, dtype=torch.float64)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-7)
    shift = torch.linspace(-1, 2, 32, dtype=torch.float64)
    assert frechet_distance(a, a + shift) == pytest.approx(float(shift.pow(2).sum()), rel=1e-9)
    # a scaled copy: same eigenvectors, so tr(S + 4S - 2 * 2S) = tr(S)
    assert frechet_distance(a, 2 * a - 2 * a.mean(0) + a.mean(0)) == pytest.approx(float(torch.cov(a.T).trace()), rel=1e-9)
    b = torch.randn(1500, 32, generator=g, dtype=torch.float64) * 1.3 + 0.2
    ours = frechet_distance(a, b)
    theirs = fid_statistics_to_metric(fid_features_to_statistics(a), fid_features_to_statistics(b), verbose=False)
    assert ours == pytest.approx(theirs["frechet_inception_distance"], rel=1e-6)


def test_inception_score_of_known_outputs():
    from ganforge.plugins.image.inception_metrics import inception_score

    assert inception_score(torch.zeros(1000, 1008))[0] == pytest.approx(1.0)  # uniform p(y|x)
    confident = torch.full((1000, 10), -50.0)
    confident[torch.arange(1000), torch.arange(1000) % 10] = 50.0
    assert inception_score(confident, splits=1)[0] == pytest.approx(10.0, rel=1e-6)


def test_kid_is_unbiased_and_exact_on_point_masses():
    from ganforge.plugins.image.inception_metrics import kid

    d = 16
    a, b = torch.full((40, d), 0.5), torch.full((40, d), -0.25)
    k = lambda x, y: (float(x @ y) / d + 1) ** 3  # noqa: E731  the polynomial kernel of KID
    assert kid(a, b, subsets=3, subset_size=40)[0] == pytest.approx(k(a[0], a[0]) + k(b[0], b[0]) - 2 * k(a[0], b[0]))
    # two samples of one distribution: the unbiased estimate averages to 0, the biased one does not
    g = torch.Generator().manual_seed(1)
    unbiased, biased = [], []
    for _ in range(300):
        x, y = torch.randn(2, 30, d, generator=g, dtype=torch.float64)
        unbiased.append(kid(x, y, subsets=1, subset_size=30)[0])
        kxx, kyy, kxy = ((u @ v.T / d + 1) ** 3 for u, v in ((x, x), (y, y), (x, y)))
        biased.append(float(kxx.mean() + kyy.mean() - 2 * kxy.mean()))
    mean, sem = np.mean(unbiased), np.std(unbiased) / math.sqrt(len(unbiased))
    assert abs(mean) < 3 * sem
    assert np.mean(biased) > 10 * sem


class StandIn(nn.Module):
    """A small feature network with Inception's interface: uint8 RGB -> (pool, logits)."""

    tag = "stand-in"

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Sequential(nn.Conv2d(3, 16, 3, 2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(16, 10)
        self.calls = 0

    @torch.no_grad()
    def forward(self, x):
        assert x.dtype == torch.uint8 and x.shape[1] == 3
        self.calls += 1
        pool = self.conv(x.float() / 255)
        return pool, self.fc(pool)


def test_inception_metrics_with_a_stand_in_network_and_cached_reference(tmp_path):
    from ganforge.contract.data import TensorDataset
    from ganforge.plugins.image.inception_metrics import InceptionMetrics, real_batches

    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randint(0, 256, (600, 1, 16, 16), dtype=torch.uint8, generator=g))
    net = StandIn()

    def build(n):
        return InceptionMetrics(net, lambda: real_batches(data, n), n_real=n, cache_dir=tmp_path, kid_subset_size=100)

    metric = build(400)
    first_calls = net.calls
    real = torch.cat(list(real_batches(data, 400)))
    same = metric(real)
    assert same["fid"] == pytest.approx(0.0, abs=1e-6) and abs(same["kid"]) < 1e-3
    assert same["is"] >= 1.0
    shifted = metric(real.clamp(-1, 1) * 0.5)  # a duller set is farther away
    assert shifted["fid"] > 100 * max(same["fid"], 1e-9) and shifted["kid"] > same["kid"]
    assert len(list(tmp_path.glob("inception-*.safetensors"))) == 1
    net.calls = 0
    again = build(400)  # the reference comes from the cache: one batch read for the key, none embedded
    assert net.calls == 0 and again(real) == pytest.approx(same)
    build(300)  # another count is another reference
    assert len(list(tmp_path.glob("inception-*.safetensors"))) == 2 and first_calls > 0


def test_missing_weights_is_one_line_saying_where_to_put_which_file(tmp_path, monkeypatch, mnist_dir):
    from ganforge.plugins.image.inception_metrics import WEIGHTS_FILE

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.delenv("GANFORGE_INCEPTION_WEIGHTS", raising=False)
    data = REG.build("dataset", "mnist", {}, root=str(mnist_dir), download=False)
    with pytest.raises(GanforgeError) as err:
        REG.build("metric", "inception", {}, dataset=data)
    message = str(err.value)
    assert "\n" not in message and WEIGHTS_FILE in message and str(tmp_path / "hub" / "checkpoints") in message
    with pytest.raises(GanforgeError, match="no such file"):
        REG.build("metric", "inception", {"weights": str(tmp_path / "nope.pth")}, dataset=data)
    toy = REG.build("dataset", "toy_grid", {}, root=None, download=False)
    with pytest.raises(GanforgeError, match="image dataset"):
        REG.build("metric", "inception", {}, dataset=toy)


def test_torch_fidelity_inception_runs_from_a_weights_file(tmp_path, monkeypatch, mnist_dir):
    """The real path: torch-fidelity's Inception architecture loaded from a file (random
    weights here; the standard file in use), grey 28x28 digits in, the reference cached."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    empty = tmp_path / "empty.pth"
    torch.save({}, empty)
    with monkeypatch.context() as m:
        m.setattr(nn.Module, "load_state_dict", lambda self, state, *a, **k: None)
        torch.manual_seed(0)
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty))
    for module in net.modules():  # variance-keeping random weights, or 90 layers leave nothing
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    weights = tmp_path / "random-inception.pth"
    torch.save(net.state_dict(), weights)
    data = REG.build("dataset", "mnist", {}, root=str(mnist_dir), download=False)
    metric = REG.build("metric", "inception", {"weights": str(weights), "n_real": 24, "kid_subset_size": 12,
                                               "splits": 2, "device": "cpu"}, dataset=data)
    out = metric(data.fetch(torch.arange(12))[0])
    assert set(out) == {"fid", "is", "is_std", "kid", "kid_std"} and all(math.isfinite(v) for v in out.values())
    assert out["fid"] > 0 and out["is"] >= 1.0
    assert len(list((mnist_dir / ".ganforge-stats").glob("inception-*.safetensors"))) == 1


def test_training_without_the_weights_stops_before_writing_anything(tmp_path, monkeypatch, mnist_dir, run_cli):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.delenv("GANFORGE_INCEPTION_WEIGHTS", raising=False)
    code, out, err = run_cli("train", "mnist_dcgan", f"data.root={mnist_dir}", "metrics=[inception]",
                             f"out_dir={tmp_path / 'run'}", "train.steps=2")
    assert code == 2 and err.count("\n") == 1 and "weights-inception-2015-12-05" in err
    assert not (tmp_path / "run").exists()
