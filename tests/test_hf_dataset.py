"""Hugging Face ``datasets`` as a dataset plugin (issue #28, item 3): an image folder and
parquet files built here on disk (no network), with labels for a conditional run; bitwise
resume; two processes over gloo."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from ganforge.contract.recipes import load_recipe
from ganforge.training.engine import train
from ganforge.errors import DatasetError
from ganforge.contract.manager import PluginManager
from test_reliability import _assert_bitwise_resume

QUICK = ["log.progress=false", "metrics=[]", "log.sample_every=0", "log.film_every=0", "log.animate=false"]
TINY = ["generator.args={ngf: 8, fc: 32, cond: cbn}", "discriminator.args={ndf: 8, fc: 32, norm: none, cond: projection}",
        "data.batch_size=16"]


def _digits(n=60, size=28, seed=0):
    """n grey images: class k has a bright square at a class-dependent place."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(n):
        k = i % 3
        x = rng.integers(0, 40, (size, size), dtype=np.uint8)
        x[4 + 6 * k: 10 + 6 * k, 4:20] = 230
        images.append(x)
        labels.append(k)
    return images, labels


@pytest.fixture
def image_folder(tmp_path):
    root = tmp_path / "folder"
    for i, (x, k) in enumerate(zip(*_digits(), strict=True)):
        (root / f"class{k}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(x).save(root / f"class{k}" / f"{i:03d}.png")
    return root


@pytest.fixture
def parquet_dir(tmp_path):
    import datasets

    images, labels = _digits(seed=1)
    features = datasets.Features({"picture": datasets.Image(), "digit": datasets.ClassLabel(names=["a", "b", "c"])})
    ds = datasets.Dataset.from_dict({"picture": [Image.fromarray(x) for x in images], "digit": labels}, features=features)
    root = tmp_path / "parquet"
    root.mkdir()
    ds.to_parquet(str(root / "train-00000.parquet"))
    return root, images, labels


def _build(root, **args):
    return PluginManager().registry.build("dataset", "hf_dataset", args, root=str(root), download=False)


def test_an_image_folder_gives_images_and_class_labels(image_folder):
    ds = _build(image_folder)
    assert len(ds) == 60 and ds.sample_shape == (1, 28, 28) and ds.num_classes == 3
    assert ds.data.dtype == torch.uint8 and sorted(ds.labels.tolist()) == sorted([i % 3 for i in range(60)])
    small = _build(image_folder, size=16, channels=3, label_column=None)
    assert small.sample_shape == (3, 16, 16) and small.labels is None


def test_parquet_columns_found_by_feature_and_pixels_kept(parquet_dir):
    root, images, labels = parquet_dir
    ds = _build(root)
    assert ds.num_classes == 3 and ds.labels.tolist() == labels  # the ClassLabel column, in order
    assert torch.equal(ds.data[:, 0], torch.from_numpy(np.stack(images)))  # the Image column, exact bytes
    with pytest.raises(DatasetError, match="image_column 'img' is not a column; columns: picture, digit"):
        _build(root, image_column="img")


def test_offline_and_bad_sources_are_one_line(tmp_path):
    with pytest.raises(DatasetError, match="reading it from the Hub needs a network and data.download: true"):
        PluginManager().registry.build("dataset", "hf_dataset", {"path": "ylecun/mnist"}, root=None, download=False)
    with pytest.raises(DatasetError, match="is not a folder"):
        _build(tmp_path / "missing")


def test_a_label_column_of_names_is_one_line_that_says_classlabel(tmp_path, run_cli):
    """Issue #35: a string label column named as label_column was a numpy TypeError, and a
    conditional run on a dataset whose classes are names did not say what to do."""
    import datasets

    images, labels = _digits(n=30)
    ds = datasets.Dataset.from_dict({"picture": [Image.fromarray(x) for x in images],
                                     "kind": [f"k{k}" for k in labels]},
                                    features=datasets.Features({"picture": datasets.Image(), "kind": datasets.Value("string")}))
    root = tmp_path / "names"
    root.mkdir()
    ds.to_parquet(str(root / "train-00000.parquet"))
    with pytest.raises(DatasetError, match=r"label_column 'kind' holds string values, not class indices: make it a "
                                           r"ClassLabel \(ds = ds.class_encode_column\('kind'\)"):
        _build(root, label_column="kind")
    code, _, err = run_cli("train", "mnist_cgan", "data.name=hf_dataset", f"data.root={root}", "train.steps=1",
                           "data.batch_size=8", f"out_dir={tmp_path / 'run'}", *QUICK)
    errors = [line for line in err.splitlines() if "error" in line.lower()]  # (datasets' progress bars aside)
    assert code == 2 and len(errors) == 1 and "hf_dataset with a ClassLabel column" in errors[0], err


def test_a_conditional_run_on_parquet_reads_the_labels_and_resumes_exactly(tmp_path, parquet_dir):
    root, _, _ = parquet_dir
    out = tmp_path / "run"
    state = train(load_recipe("mnist_cgan", [f"out_dir={out}", "data.name=hf_dataset", f"data.root={root}",
                                             "train.steps=4", *TINY, *QUICK]))
    assert state.system.num_classes == 3 and state.step == 4
    recipe = ["objective=conditional", "data.name=hf_dataset", f"data.root={root}", "generator=infogan",
              "discriminator=infogan", "train.ema=0.9", "log.every=2", *TINY, *QUICK]
    _assert_bitwise_resume(tmp_path / "resume", recipe, 4)  # 3 batches of 16 an epoch: stops mid-epoch


@pytest.mark.slow
def test_two_processes_train_on_an_image_folder(tmp_path, image_folder):
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "ganforge", "train", "mnist_cgan", f"out_dir={out}", "data.name=hf_dataset",
                           f"data.root={image_folder}", "train.steps=4", "log.every=2", *TINY, *QUICK],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((out / "run.json").read_text())
    assert record["processes"] == 2
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]


def test_a_stream_is_shuffled_per_epoch_the_same_way_every_time(parquet_dir):
    root, images, labels = parquet_dir
    ds = _build(root, streaming=True, buffer=16, seed=3)
    assert isinstance(ds, torch.utils.data.IterableDataset) and ds.sample_shape == (1, 28, 28) and ds.num_classes == 3
    epoch0 = [y for _, y in ds]
    again = [y for _, y in ds]
    ds.set_epoch(1)
    epoch1 = [y for _, y in ds]
    assert sorted(epoch0) == sorted(labels) and epoch0 == again  # every example once, in a fixed order
    assert epoch1 != epoch0 and sorted(epoch1) == sorted(labels)  # another order next epoch
    first = next(iter(_build(root, streaming=True, buffer=1)))[0]  # buffer 1: the file's order
    assert torch.equal(((first + 1) * 127.5).round().to(torch.uint8)[0], torch.from_numpy(images[0]))


def test_a_conditional_run_on_a_stream_resumes_exactly_mid_epoch(tmp_path, parquet_dir):
    root, _, _ = parquet_dir
    recipe = ["objective=conditional", "data.name=hf_dataset", f"data.root={root}", "data.args={streaming: true, buffer: 32}",
              "generator=infogan", "discriminator=infogan", "train.ema=0.9", "log.every=2", *TINY, *QUICK]
    _assert_bitwise_resume(tmp_path, recipe, 4)  # 3 batches of 16 an epoch: the resume is mid-epoch 1


@pytest.mark.slow
def test_two_processes_split_a_stream(tmp_path, parquet_dir):
    root, _, _ = parquet_dir
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "ganforge", "train", "mnist_cgan", f"out_dir={out}", "data.name=hf_dataset",
                           f"data.root={root}", "data.args={streaming: true}", "train.steps=4", "log.every=2",
                           "data.batch_size=8", *TINY[:2], *QUICK],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "run.json").read_text())["processes"] == 2
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4] and rows[-1]["epoch"] == 1  # 30 examples a rank (60 unsplit): 3 batches an epoch


@pytest.mark.slow
def test_a_stream_too_small_for_every_process_is_one_line(tmp_path, parquet_dir):
    """Issue #35: 15 examples over 2 processes at batch 8: one process had a batch and the other
    none, and rank 0 died in the first all-reduce with gloo's "Connection closed by peer". The
    processes agree before the first step, and the error is printed once."""
    root, _, _ = parquet_dir
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "ganforge", "train", "mnist_cgan", f"out_dir={tmp_path / 'run'}", "data.name=hf_dataset",
                           f"data.root={root}", "data.args={streaming: true, limit: 15}", "train.steps=4",
                           "data.batch_size=8", *TINY[:2], *QUICK],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    assert proc.stderr.count("gave no complete batch of 8 on 1 of 2 processes") == 1, proc.stderr[-3000:]
    assert "Connection closed by peer" not in proc.stderr


def test_a_save_to_disk_folder_is_read_with_its_split(tmp_path, parquet_dir):
    """Issue #37: `Dataset.save_to_disk`, the usual way to keep a prepared dataset, failed with
    'Instruction "train" corresponds to no data!'. A Dataset and a DatasetDict (split chosen)."""
    import datasets

    root, images, labels = parquet_dir
    ds = datasets.load_dataset("parquet", data_dir=str(root), split="train")
    ds.save_to_disk(str(tmp_path / "one"))
    one = _build(tmp_path / "one")
    assert len(one) == 60 and one.num_classes == 3 and one.labels.tolist() == labels
    datasets.DatasetDict({"train": ds, "test": ds.select(range(6))}).save_to_disk(str(tmp_path / "both"))
    assert len(_build(tmp_path / "both", split="test")) == 6
    with pytest.raises(DatasetError, match=r"has no split 'valid'; its splits: train, test"):
        _build(tmp_path / "both", split="valid")
