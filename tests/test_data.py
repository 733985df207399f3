"""Dataset plugins on generated files (and the real MNIST when ../shared/data/mnist exists)."""
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SHARED_MNIST, make_mnist_like
from ganforge.errors import DatasetError
from ganforge.contract.manager import PluginManager

REG = PluginManager().registry


def build(name, root, **args):
    return REG.build("dataset", name, args, root=str(root), download=False)


@pytest.mark.parametrize("layout", ["flat_gz", "flat_raw", "torchvision"])
def test_mnist_layouts(tmp_path, layout):
    if layout == "torchvision":
        make_mnist_like(tmp_path / "MNIST" / "raw", n=64, compress=False)
    else:
        make_mnist_like(tmp_path, n=64, compress=layout == "flat_gz")
    ds = build("mnist", tmp_path)
    assert len(ds) == 64 and ds.sample_shape == (1, 28, 28)
    x, y = ds.__getitems__([0, 1, 2])
    assert x.shape == (3, 1, 28, 28) and x.dtype == torch.float32
    assert x.min() == -1.0 and x.max() == 1.0
    assert y.dtype == torch.int64


def test_fashion_mnist_uses_its_torchvision_folder(tmp_path):
    make_mnist_like(tmp_path / "FashionMNIST" / "raw", n=32)
    assert len(build("fashion_mnist", tmp_path)) == 32


def test_missing_files_say_where_and_what(tmp_path):
    with pytest.raises(DatasetError) as err:
        build("mnist", tmp_path / "nowhere")
    msg = str(err.value)
    assert str(tmp_path / "nowhere") in msg and str(tmp_path / "nowhere" / "MNIST" / "raw") in msg
    assert "train-images-idx3-ubyte[.gz]" in msg and "train-labels-idx1-ubyte[.gz]" in msg
    assert "data.root" in msg


def test_truncated_idx_is_a_clear_error(tmp_path):
    make_mnist_like(tmp_path, n=16, compress=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DatasetError, match="truncated or damaged"):
        build("mnist", tmp_path)
    path.write_bytes(b"\x01\x02\x03\x04garbage")
    with pytest.raises(DatasetError, match="bad magic number"):
        build("mnist", tmp_path)


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="needs the real MNIST in ../shared/data/mnist; "
                    "the same code is tested on generated IDX files above")
def test_real_mnist_statistics():
    ds = build("mnist", SHARED_MNIST)
    assert len(ds) == 60000
    raw = ds.data.float() / 255
    assert raw.mean().item() == pytest.approx(0.1307, abs=1e-3)
    assert torch.bincount(ds.labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert len(build("mnist", SHARED_MNIST, split="test")) == 10000


def test_cifar10_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {"data": rng.integers(0, 256, (10, 3072), dtype=np.uint8), "labels": list(range(10))}
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)
    ds = build("cifar10", tmp_path)
    assert len(ds) == 50 and ds.sample_shape == (3, 32, 32)
    assert build("cifar10", tmp_path, size=64).sample_shape == (3, 64, 64)
    assert len(build("cifar10", tmp_path, split="test")) == 10
    with pytest.raises(DatasetError, match="data_batch_1"):
        build("cifar10", tmp_path / "empty")
    (folder / "data_batch_3").unlink()  # issue #35: the line did not say which file was missing
    with pytest.raises(DatasetError, match=r"CIFAR-10 train batches in .*cifar-10-batches-py are incomplete: "
                                           r"data_batch_3 is missing"):
        build("cifar10", tmp_path)


def test_image_folder(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    Image.new("RGB", (40, 30), (255, 0, 0)).save(tmp_path / "a" / "red.png")
    Image.new("L", (20, 20), 0).save(tmp_path / "a" / "b" / "black.jpg")
    ds = build("image_folder", tmp_path, size=16)
    assert len(ds) == 2 and ds.sample_shape == (3, 16, 16)
    assert torch.allclose(ds[1][0], torch.ones(16, 16))  # red channel of the red image
    assert torch.allclose(ds[0], -torch.ones(3, 16, 16))  # black
    with pytest.raises(DatasetError, match="no images found under"):
        build("image_folder", _empty(tmp_path))


def test_image_files_are_the_images_under_a_folder_sorted(tmp_path):
    """The one list of image files the image_folder dataset, the translation folders and the
    project / translate commands all read: recursive, by suffix in any case, files only."""
    from ganforge.data import image_files

    (tmp_path / "b" / "dir.png").mkdir(parents=True)  # a folder named like an image: not a file
    for name in ("b/z.PNG", "a.jpg", "notes.txt", "b/y.webp"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in image_files(tmp_path)] == ["a.jpg", "b/y.webp", "b/z.PNG"]


def _empty(tmp_path):
    p = tmp_path / "empty"
    p.mkdir()
    return p


def test_toy_mixtures_match_their_definition():
    grid = REG.build("dataset", "toy_grid", {"n": 5000}, root=None, download=False)
    assert grid.means.shape == (25, 2) and set(grid.means[:, 0].tolist()) == {-4.0, -2.0, 0.0, 2.0, 4.0}
    residual = grid.data - grid.means[grid.labels]
    assert residual.std().item() == pytest.approx(0.05, rel=0.05)
    ring = REG.build("dataset", "toy_ring", {}, root=None, download=False)
    assert torch.allclose(ring.means.norm(dim=1), torch.ones(8))
    assert torch.allclose(ring.means[2], torch.tensor([0.0, 1.0]), atol=1e-6)
    assert (ring.data - ring.means[ring.labels]).std().item() == pytest.approx(0.01, rel=0.05)


def test_mixture_metric_known_answers():
    from ganforge.plugins.mixture_metrics import mixture_stats
    from ganforge.plugins.toy import grid_means

    means = grid_means()
    everywhere = means.repeat(4, 1)
    s = mixture_stats(everywhere, means, 0.05)
    assert s["modes"] == 25 and s["high_quality"] == 1.0 and s["reverse_kl"] == pytest.approx(0.0)
    one = means[:1].repeat(100, 1)
    s = mixture_stats(one, means, 0.05)
    assert s["modes"] == 1 and s["reverse_kl"] == pytest.approx(np.log(25))
    off = means + 1.0  # between modes
    s = mixture_stats(off, means, 0.05)
    assert s["modes"] == 0 and s["high_quality"] == 0.0


def test_on_device_needs_an_in_memory_dataset(tmp_path, run_cli):
    (tmp_path / "img").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "img" / "a.png")
    code, _, err = run_cli("train", "toy_grid", f"out_dir={tmp_path / 'run'}", "data.name=image_folder",
                           f"data.root={tmp_path / 'img'}", "data.on_device=true", "data.batch_size=1")
    assert code == 2 and "data.on_device=true needs an in-memory dataset" in err


def test_loader_settings_for_file_and_memory_datasets(tmp_path):
    import torch

    from ganforge.contract.recipes import load_recipe
    from ganforge.training.batches import _workers, make_loader

    assert 1 <= _workers("auto") <= 8 and _workers(0) == 0 and _workers(3) == 3
    recipe = load_recipe("toy_grid", ["data.num_workers=2", "data.batch_size=4"])
    files = build("image_folder", _images(tmp_path), size=16)
    loader = make_loader(recipe, files, torch.device("cpu"))
    assert loader.num_workers == 2 and loader.persistent_workers and not loader.pin_memory
    assert loader.drop_last and next(iter(loader)).shape == (4, 3, 16, 16)
    memory = build("toy_grid", None, n=64)
    loader = make_loader(recipe, memory, torch.device("cpu"))
    assert loader.num_workers == 0  # whole batches by one indexing operation, in this process
    x, y = next(iter(loader))
    assert x.shape == (4, 2) and y.shape == (4,)


def _images(tmp_path, n=12):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(n):
        Image.new("RGB", (20, 20), (20 * i, 0, 0)).save(folder / f"{i}.png")
    return folder


def test_a_malicious_cifar_batch_is_refused_without_running_its_payload(tmp_path):
    """CIFAR-10's python batches are pickles: a crafted one must not run code."""
    import os as _os

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (_os.system, (f"touch {marker}",))

    good = {"data": np.zeros((4, 3072), np.uint8), "labels": [1, 2, 3, 4], "batch_label": "b", "filenames": ["a"] * 4}
    for i in range(1, 6):
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump(good if i > 1 else {"data": Payload(), "labels": []}, f, protocol=2)
    with pytest.raises(DatasetError, match=r"data_batch_1: not a CIFAR-10 batch \(refused to load .*system"):
        REG.build("dataset", "cifar10", {}, root=str(tmp_path), download=False)
    assert not marker.exists()  # the payload never ran
    with open(folder / "data_batch_1", "wb") as f:
        pickle.dump(good, f, protocol=2)
    data = REG.build("dataset", "cifar10", {}, root=str(tmp_path), download=False)  # real batches still load
    assert len(data) == 20 and data.labels[:4].tolist() == [1, 2, 3, 4]


def test_a_missing_mnist_labels_file_is_named(tmp_path):
    root = make_mnist_like(tmp_path / "mnist")
    (root / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match=r"MNIST train file train-labels-idx1-ubyte\[.gz\] is missing: found "
                                           r".*train-images-idx3-ubyte.gz but not its partner"):
        REG.build("dataset", "mnist", {}, root=str(root), download=False)
    with pytest.raises(Exception, match="limit is a number of samples, >= 1, got -5"):
        REG.build("dataset", "mnist", {"limit": -5}, root=str(make_mnist_like(tmp_path / "m2")), download=False)


def test_a_truncated_image_is_skipped_with_its_name_and_a_broken_folder_is_one_error(tmp_path):
    """A damaged file in a large folder must not end a run: it is skipped (the next image is
    used) with a warning naming it; many unreadable files in a row are one clear error. The
    same for class folders and the pix2pix/CycleGAN folders."""
    from ganforge.plugins.image.image_folder import MAX_SKIPS, image_folder
    from ganforge.plugins.translation.data import unpaired_folder

    root = tmp_path / "imgs"
    (root / "cls").mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (12, 12), (60 * i, 0, 0)).save(root / "cls" / f"{i}.png")
    whole = (root / "cls" / "1.png").read_bytes()
    (root / "cls" / "1.png").write_bytes(whole[: len(whole) // 2])  # truncated
    for ds in (image_folder(root=str(root), size=8), image_folder(root=str(root), size=8, classes=True)):
        with pytest.warns(UserWarning, match=r"1\.png: cannot read this image .*skipped"):
            item = ds[1]
        first = item[0] if isinstance(item, tuple) else item
        second = ds[2][0] if isinstance(item, tuple) else ds[2]
        assert torch.equal(first, second)  # item 1 is the next readable image
    for d in ("trainA", "trainB"):
        (tmp_path / "u" / d).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "u" / d / "ok.png")
    (tmp_path / "u" / "trainB" / "bad.png").write_bytes(b"\x89PNG broken")
    pairs = unpaired_folder(root=str(tmp_path / "u"), size=8, load_size=8)
    with pytest.warns(UserWarning, match="bad.png"):
        assert all(pairs[i][1].shape == (3, 8, 8) for i in range(2))
    broken = tmp_path / "broken"
    broken.mkdir()
    for i in range(MAX_SKIPS + 1):
        (broken / f"{i}.png").write_bytes(b"not an image")
    with pytest.warns(UserWarning), pytest.raises(DatasetError, match="unreadable images in a row from .*0.png"):
        image_folder(root=str(broken), size=8)[0]
