"""The public Python API (issue #28, item 1): ganforge.train, ganforge.load_run and a Run's
networks, samples and translations, as a user outside the CLI meets them."""
import re

import pytest
import torch

import ganforge
from ganforge.errors import GanforgeError
from ganforge.observe.sampling import read_sample_file

QUICK = ["log.progress=false", "metrics=[]", "log.sample_every=0", "log.film_every=0", "log.animate=false"]


def test_what_the_package_exports_is_its_public_api():
    for name in ganforge.__all__:
        assert getattr(ganforge, name) is not None, name
    assert {"train", "load_run", "load_recipe", "Run", "PluginManager"} <= set(ganforge.__all__)
    with pytest.raises(AttributeError):
        ganforge.not_there  # noqa: B018


def test_train_then_load_run_gives_the_samples_ganforge_sample_writes(tmp_path, run_cli):
    state = ganforge.train("toy_grid", [f"out_dir={tmp_path}", "train.steps=20", "train.ema=0.9",
                                        "log.checkpoint_every=10", "data.args.n=640", *QUICK])
    assert state.step == 20
    run = ganforge.load_run(tmp_path)
    assert run.step == 20 and run.checkpoint == tmp_path / "checkpoints" / "step-00000020"
    assert not run.network("G").training  # eval mode
    samples = run.generate(50, seed=3)
    code, _, err = run_cli("sample", tmp_path, "--n", "50", "--seed", "3", "--out", tmp_path / "s.safetensors")
    assert code == 0, err
    assert torch.equal(samples, read_sample_file(tmp_path / "s.safetensors")[0])  # the same draw as the CLI
    raw = ganforge.load_run(tmp_path / "checkpoints" / "step-00000010", ema=False)
    assert raw.step == 10 and not torch.equal(raw.generate(50, seed=3), samples)  # another checkpoint, raw G
    with pytest.raises(GanforgeError, match="this run has no network 'E'; its networks: G, D"):
        run.network("E")
    with pytest.raises(GanforgeError, match="labels need a class-conditional run"):
        run.generate(4, labels=1)
    with pytest.raises(GanforgeError, match="translate needs an image-to-image run"):
        run.translate(torch.zeros(1, 2))


def test_a_recipe_object_with_overrides_and_labels_of_a_conditional_run(tmp_path, mnist_dir):
    recipe = ganforge.load_recipe("mnist_cgan", [f"data.root={mnist_dir}", "generator.args={ngf: 8, fc: 32, cond: cbn}",
                                                 "discriminator.args={ndf: 8, fc: 32, norm: none, cond: projection}"])
    assert isinstance(recipe, ganforge.Recipe)
    state = ganforge.train(recipe, [f"out_dir={tmp_path}", "train.steps=2", "data.batch_size=16", *QUICK])
    assert state.step == 2 and state.config.data.batch_size == 16
    run = ganforge.load_run(tmp_path)
    threes = run.generate(6, seed=0, labels=3)
    mixed = run.generate(6, seed=0, labels=[3, 3, 3, 4, 4, 4])
    assert threes.shape == (6, 1, 28, 28) and threes.abs().max() <= 1
    assert torch.equal(threes[:3], mixed[:3]) and not torch.equal(threes[3:], mixed[3:])  # labels change samples
    # issue #35: a class the run does not have was an IndexError deep in torch
    for bad, message in ((12, "labels must be classes 0 to 9 of this run, got 12"), (-1, "got -1"),
                         ([1, 2], "labels must be one class index, or 6 of them"), (2.5, "one class index"),
                         ("three", "labels must be a class index or one per sample")):
        with pytest.raises(ganforge.GanforgeError, match=re.escape(message)):
            run.generate(6, labels=bad)


def test_the_readme_python_block_runs_as_written(tmp_path, monkeypatch, capsys):
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = re.search(r"## From Python.*?```python\n(.*?)```", readme, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {})  # noqa: S102 - the documented snippet, as written
    out = capsys.readouterr().out.strip().splitlines()[-1]
    assert out == f"300 {Path('runs/toy_api/checkpoints/step-00000300')} torch.Size([1000, 2])"


def test_the_readme_export_command_runs_as_written(tmp_path, monkeypatch, run_cli):
    """README's `ganforge export runs/toy_api --out toy_model` and load_pretrained, on the run
    of the README's Python block."""
    import re
    from pathlib import Path

    readme = " ".join((Path(__file__).resolve().parent.parent / "README.md").read_text().split())
    command = re.search(r"`ganforge export (runs/toy_api --out toy_model)`", readme).group(1).split()
    monkeypatch.chdir(tmp_path)
    ganforge.train("toy_grid", ["train.steps=20", "out_dir=runs/toy_api", *QUICK])
    code, _, err = run_cli("export", *command)
    assert code == 0, err
    assert torch.equal(ganforge.load_pretrained("toy_model").generate(8), ganforge.load_run("runs/toy_api").generate(8))
