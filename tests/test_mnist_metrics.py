"""MNIST-family metrics: closed-form checks, and the shipped classifier on real MNIST."""
import math

import pytest
import torch

from conftest import SHARED_MNIST, make_mnist_like
from ganforge.contract.manager import PluginManager
from ganforge.plugins.image.mnist_metrics import classifier_score, frechet_distance, precision_recall

REG = PluginManager().registry


def test_frechet_distance_closed_forms():
    x = torch.randn(4000, 5, generator=torch.Generator().manual_seed(0))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    shift = torch.tensor([1.0, -2.0, 0.0, 0.5, 3.0])
    assert frechet_distance(x, x + shift) == pytest.approx(float(shift.pow(2).sum()), rel=1e-6)
    # b = 2x: |mu|^2 + tr(S) + tr(4S) - 2 tr(2S) = |mu|^2 + tr(S)
    xd = x.double()
    expected = float(xd.mean(0).pow(2).sum() + torch.cov(xd.T).trace())
    assert frechet_distance(x, 2 * x) == pytest.approx(expected, rel=1e-6)


def test_classifier_score_bounds():
    assert classifier_score(torch.eye(10).repeat(5, 1)) == pytest.approx(10.0)
    assert classifier_score(torch.eye(10)[[3] * 50]) == pytest.approx(1.0)
    assert classifier_score(torch.full((20, 10), 0.1)) == pytest.approx(1.0)


def test_precision_recall_constructed():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(500, 2, generator=g)
    assert precision_recall(a, a) == (1.0, 1.0)
    assert precision_recall(a, a + 100.0) == (0.0, 0.0)
    two_modes = torch.cat([a[:250] * 0.1 - 5, a[250:] * 0.1 + 5])
    one_mode = two_modes[:250]  # a collapsed generator: precise, but half the data uncovered
    precision, recall = precision_recall(two_modes, one_mode)
    assert precision == 1.0 and 0.4 < recall < 0.6


def test_metric_plumbing_on_generated_idx_files(tmp_path):
    """The same code as on the real data, on generated files (train and test split)."""
    root = make_mnist_like(tmp_path / "mnist", n=300)
    make_mnist_like(root, n=200, split="test")
    train = REG.build("dataset", "mnist", {}, root=str(root), download=False)
    metric = REG.build("metric", "mnist", {}, dataset=train)
    test = REG.build("dataset", "mnist", {"split": "test"}, root=str(root), download=False)
    real = test.normalize(test.data)
    out = metric(real)  # the real test set against itself
    assert out["frechet_distance"] == pytest.approx(0.0, abs=1e-4)
    assert out["classifier_score"] == pytest.approx(out["classifier_score_real"])
    assert out["precision"] == 1.0 and out["recall"] == 1.0
    assert sum(out[f"class_{d}"] for d in range(10)) == pytest.approx(1.0)
    with pytest.raises(Exception, match="needs an MNIST dataset"):
        REG.build("metric", "mnist", {}, dataset=REG.build("dataset", "toy_grid", {}, root=None, download=False))


needs_mnist = pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="needs the real MNIST in ../shared/data/mnist; "
                                 "test_metric_plumbing_on_generated_idx_files runs the same code")


@needs_mnist
def test_shipped_classifier_accuracy_on_the_real_test_set():
    from ganforge.plugins.image.mnist_classifier import load_classifier

    test = REG.build("dataset", "mnist", {"split": "test"}, root=str(SHARED_MNIST), download=False)
    model = load_classifier()
    with torch.no_grad():
        pred = torch.cat([model(test.normalize(x)).argmax(1) for x in test.data.split(2000)])
    assert (pred == test.labels).float().mean().item() >= 0.99


@needs_mnist
def test_real_digits_score_like_the_real_test_set_and_one_class_does_not():
    train = REG.build("dataset", "mnist", {}, root=str(SHARED_MNIST), download=False)
    metric = REG.build("metric", "mnist", {}, dataset=train)
    real = train.normalize(train.data[:2500])  # training digits: not the reference test digits
    out = metric(real)
    assert out["classifier_score"] == pytest.approx(out["classifier_score_real"], rel=0.03)
    assert out["classifier_score_real"] > 9.0
    assert out["class_kl"] < 0.01 and out["precision"] > 0.8 and out["recall"] > 0.8
    ones = train.normalize(train.data[train.labels == 1][:1000])
    collapsed = metric(ones)
    assert collapsed["class_kl"] > 0.8 * math.log(10) and collapsed["class_1"] > 0.95
    assert collapsed["recall"] < 0.3 and collapsed["frechet_distance"] > 10 * out["frechet_distance"]
