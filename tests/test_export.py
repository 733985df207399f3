"""``ganforge export`` and ``ganforge.load_pretrained`` (issue #28, item 5): a trained run's
sampling networks in the Hub's convention, loaded elsewhere with the same samples."""
import json
import re

import pytest
import torch
from safetensors.torch import load_file

import ganforge

QUICK = ["log.progress=false", "log.sample_every=0", "log.film_every=0", "log.animate=false"]


@pytest.fixture
def toy_run(tmp_path):
    run = tmp_path / "run"
    ganforge.train("toy_grid", [f"out_dir={run}", "train.steps=30", "data.args.n=640", "log.eval_every=30",
                                "log.eval_samples=500", *QUICK])
    return run


def test_an_export_loads_elsewhere_and_samples_as_the_run(toy_run, tmp_path, run_cli, monkeypatch):
    code, out, err = run_cli("export", toy_run, "--out", tmp_path / "toy_export")
    assert code == 0, err
    folder = tmp_path / "toy_export"
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors", "samples.png"]
    weights = load_file(str(folder / "model.safetensors"))
    assert weights and all(k.startswith("G.") for k in weights)  # the sampling network only, no D
    config = json.loads((folder / "config.json").read_text())
    assert config["networks"] == {"G": {"kind": "generator", "name": "mlp", "args": {"hidden": [256, 256, 256],
                                                                                   "batchnorm": False}, "ema": True}}
    assert config["step"] == 30 and config["sample_shape"] == [2] and config["recipe"]["name"] == "toy_grid"
    pretrained = ganforge.load_pretrained(folder)
    run = ganforge.load_run(toy_run)
    assert torch.equal(pretrained.generate(200, seed=2), run.generate(200, seed=2))  # EMA weights, same draw
    card = (folder / "README.md").read_text()
    assert "| mixture/modes_total | 25 |" in card and "30 steps on `toy_grid`" in " ".join(card.split())
    # the card's lines to load it run as written, from the folder's parent
    snippet = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(snippet, "README.md", "exec"), scope)  # noqa: S102
    assert torch.equal(scope["samples"], run.generate(16, seed=0))


def test_export_refuses_a_used_folder_and_load_pretrained_a_foreign_one(toy_run, tmp_path, run_cli):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    code, _, err = run_cli("export", toy_run, "--out", tmp_path / "busy")
    assert code == 2 and "exists and is not empty" in err and err.count("\n") == 1
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["keep.txt"]
    with pytest.raises(ganforge.GanforgeError, match="is not a ganforge export"):
        ganforge.load_pretrained(tmp_path / "busy")
    # issue #35: --out x.safetensors made a folder of that name
    code, _, err = run_cli("export", toy_run, "--out", tmp_path / "model.safetensors")
    assert code == 2 and "looks like a file name, but an export is a folder" in err and err.count("\n") == 1
    assert not (tmp_path / "model.safetensors").exists()


def test_load_pretrained_checks_what_it_is_given_before_allocating(toy_run, tmp_path, run_cli, monkeypatch):
    """Issue #35: a crafted config.json was built before any shape check, an unknown part was a
    bare KeyError, load_pretrained(123) a TypeError, and a Hub id was not understood."""
    import shutil

    code, _, err = run_cli("export", toy_run, "--out", tmp_path / "model")
    assert code == 0, err
    folder = tmp_path / "model"
    config = json.loads((folder / "config.json").read_text())
    assert config["packages"] == {"objective:unconditional": "ganforge", "generator:mlp": "ganforge"}
    with pytest.raises(ganforge.GanforgeError, match=r"takes an export folder's path or a Hub repository id.*int 123"):
        ganforge.load_pretrained(123)
    # a sample_shape a million times larger: refused on the meta device, nothing allocated
    crafted = tmp_path / "crafted"
    shutil.copytree(folder, crafted)
    (crafted / "config.json").write_text(json.dumps({**config, "sample_shape": [1000, 1000]}))
    with pytest.raises(ganforge.GanforgeError, match=r"config.json does not match the weights.*G\..* in the weights"):
        ganforge.load_pretrained(crafted)
    # a part whose plugin is not installed here: the line names the package that provides it
    (crafted / "config.json").write_text(json.dumps({
        **config, "recipe": {**config["recipe"], "generator": {"name": "stylish", "args": {}}},
        "packages": {**config["packages"], "generator:stylish": "ganforge-stylish"}}))
    with pytest.raises(ganforge.GanforgeError, match=r"Unknown generator 'stylish'.*pip install ganforge-stylish"):
        ganforge.load_pretrained(crafted)
    # a Hub repository id: fetched only when downloads are allowed
    with pytest.raises(ganforge.GanforgeError, match=r"pass download=True"):
        ganforge.load_pretrained("someone/toy-grid")
    import huggingface_hub

    asked = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, repo_type: (asked.append(repo_id), str(folder))[1])
    pretrained = ganforge.load_pretrained("someone/toy-grid", download=True)
    assert asked == ["someone/toy-grid"] and pretrained.generate(4).shape == (4, 2)


def test_push_uploads_the_export_folder(toy_run, tmp_path, run_cli, monkeypatch):
    """--push hands the folder to huggingface_hub (the upload itself needs a network: faked)."""
    calls = []

    class FakeApi:
        def create_repo(self, repo, **kw):
            calls.append(("create", repo, kw["repo_type"]))

        def upload_folder(self, folder_path, repo_id, **kw):
            calls.append(("upload", sorted(p.name for p in __import__("pathlib").Path(folder_path).iterdir()), repo_id))
            return "https://huggingface.co/me/toy/commit/1"

    monkeypatch.setattr("huggingface_hub.HfApi", FakeApi)
    code, out, err = run_cli("export", toy_run, "--out", tmp_path / "e", "--push", "me/toy")
    assert code == 0, err
    assert calls == [("create", "me/toy", "model"),
                     ("upload", ["README.md", "config.json", "model.safetensors", "samples.png"], "me/toy")]
    assert "uploaded: https://huggingface.co/me/toy/commit/1" in out


def _card_code(folder):
    return re.search(r"```python\n(.*?)```", (folder / "README.md").read_text(), re.S).group(1)


def test_a_vocoder_export_vocodes_without_its_training_speech(tmp_path, run_cli, monkeypatch):
    """The export carries the facts the system reads from its data (rate, hop), not the data:
    with the clips deleted, load_pretrained vocodes as the run does, and the card's lines run."""
    import shutil

    from audio_helpers import TINY, make_clips, voiced

    clips = make_clips(tmp_path / "clips", n=8, seconds=0.5, lists=True)
    ganforge.train("speech_hifigan", [f"out_dir={tmp_path / 'run'}", f"data.root={clips}", "train.steps=2",
                                      "phases={}", *TINY])
    waveform = torch.from_numpy(voiced(0.4, 130, 3))
    expected = ganforge.load_run(tmp_path / "run").vocode(waveform)
    code, _, err = run_cli("export", tmp_path / "run", "--out", tmp_path / "vocoder")
    assert code == 0, err
    shutil.rmtree(clips)
    config = json.loads((tmp_path / "vocoder" / "config.json").read_text())
    assert config["data_facts"]["sample_rate"] == 22050 and config["data_facts"]["hop"] == 256
    assert "root" not in config["data_facts"]
    _no_local_path_in(tmp_path / "vocoder", tmp_path)
    pretrained = ganforge.load_pretrained(tmp_path / "vocoder")
    assert torch.equal(pretrained.vocode(waveform), expected)
    with pytest.raises(ganforge.GanforgeError, match="an export holds the networks, not the data"):
        pretrained.generate(2)  # (held-out utterances are data)
    snippet = _card_code(tmp_path / "vocoder")
    assert "run.vocode(waveform)" in snippet and "generate" not in snippet
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(snippet, "README.md", "exec"), scope)  # noqa: S102
    assert torch.equal(scope["audio"], pretrained.vocode(torch.zeros(22050)))


def test_a_translation_export_translates_without_its_images(tmp_path, run_cli, monkeypatch):
    import shutil

    from test_translation import QUICK as T_QUICK, TINY_P2P
    from conftest import make_mnist_like

    digits = make_mnist_like(make_mnist_like(tmp_path / "mnist", n=64), n=40, split="test")
    ganforge.train("mnist_edges_pix2pix", [f"out_dir={tmp_path / 'run'}", f"data.root={digits}", "train.steps=2",
                                           "metrics=[]", *TINY_P2P, *T_QUICK])
    images = torch.rand(3, 1, 32, 32) * 2 - 1
    expected = ganforge.load_run(tmp_path / "run").translate(images)
    assert run_cli("export", tmp_path / "run", "--out", tmp_path / "edges")[0] == 0
    shutil.rmtree(digits)
    assert torch.equal(ganforge.load_pretrained(tmp_path / "edges").translate(images), expected)
    _no_local_path_in(tmp_path / "edges", tmp_path)
    snippet = _card_code(tmp_path / "edges")
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(snippet, "README.md", "exec"), scope)  # noqa: S102
    assert scope["translated"].shape == (4, 1, 32, 32)


def _no_local_path_in(folder, *paths):
    """No file of an export names a local path: the run's folders, the data's, the home folder."""
    import os

    home = os.path.expanduser("~")
    for file in folder.iterdir():
        text = file.read_bytes().decode("latin-1")
        for path in [*map(str, paths), os.getcwd(), home + "/"]:
            assert path not in text, f"{file.name} names {path}"


INF = ["generator.args={ngf: 4, fc: 16}", "discriminator.args={ndf: 4, fc: 16, norm: none}", "penalties=[]",
       "data.batch_size=8"]
CARD_SYSTEMS = {  # each built-in system kind of the image family, tiny
    "unconditional": ("mnist_dcgan", ["generator.args={ngf: 4}", "discriminator.args={ndf: 4}", "data.batch_size=8"],
                      ["samples"]),
    "infogan": ("mnist_infogan", INF[:1] + ["discriminator.args={ndf: 4, fc: 16, norm: none, codes: 10}"] + INF[2:],
                ["samples"]),
    "conditional": ("mnist_cgan", ["generator.args={ngf: 4, fc: 16, cond: cbn}",
                                   "discriminator.args={ndf: 4, fc: 16, norm: none, cond: projection}"] + INF[2:],
                    ["samples", "threes"]),
    "acgan": ("mnist_cgan", ["objective=acgan", "generator.args={ngf: 4, fc: 16, cond: cbn}",
                             "discriminator={name: infogan, args: {ndf: 4, fc: 16, norm: none}}"] + INF[2:],
              ["samples", "threes"]),
    "stylegan2": ("mnist_stylegan2", ["generator.args={w_dim: 16, map: 2, fmaps: 0.0078125, channel_max: 8}",
                                      "discriminator.args={fmaps: 0.0078125, channel_max: 8}", "train.z_dim=16",
                                      "data.batch_size=8"], ["samples"]),
    "cyclegan": ("mnist_thick_cyclegan", ["generator.args={ngf: 4, blocks: 1, norm: instance}",
                                          "discriminator.args={ndf: 4, n_layers: 1, norm: instance}",
                                          "data.batch_size=4"], ["translated"]),
    "vqgan": ("mnist_vqgan", ["networks.E.args={width: 8}", "networks.G.args={width: 8}", "networks.Q.args={codes: 8}",
                              "networks.D.args={ndf: 4, n_layers: 1}", "objective.args.code_dim=4", "data.batch_size=8",
                              "phases.D.start=1"], ["codes", "decoded"]),
}


@pytest.mark.parametrize("kind", list(CARD_SYSTEMS))
def test_the_model_card_of_each_system_kind_runs_and_names_no_local_path(kind, tmp_path, run_cli, monkeypatch):
    """Issue #37: the card's code ran only for the classic GAN, listed the networks it dropped
    without saying so, embedded unused parts and published out_dir, resume and the data's path.
    For each system kind: the card's lines run as written with the data deleted, every network
    of the system is named (exported, or not and why), the recipe has no unused part, and no
    file of the export names a local path."""
    import shutil

    from conftest import make_mnist_like

    recipe, tiny, names = CARD_SYSTEMS[kind]
    digits = make_mnist_like(make_mnist_like(tmp_path / "data" / "mnist", n=64), n=64, split="test")
    run = tmp_path / "runs" / "mine"
    ganforge.train(recipe, [f"out_dir={run}", f"data.root={digits}", "train.steps=2", "log.eval_every=2",
                            "log.eval_samples=16", "log.n_samples=16", "metrics=[]", *tiny, *QUICK])
    code, _, err = run_cli("export", run, "--out", tmp_path / "shared" / "model")
    assert code == 0, err
    folder = tmp_path / "shared" / "model"
    loaded = ganforge.load_run(run)
    shutil.rmtree(tmp_path / "data")
    config = json.loads((folder / "config.json").read_text())
    card = (folder / "README.md").read_text()
    for name, spec in loaded.system.networks.items():  # every network named, with its kind
        assert f"`{name}` ({spec.kind}" in card
        assert (name in config["networks"]) == (spec.kind != "discriminator")
    assert "out_dir" not in config["recipe"] and "resume" not in config["recipe"]
    assert config["recipe"]["data"]["root"] is None
    uses = {spec.kind for spec in loaded.system.networks.values() if not spec.default}
    assert ("generator" in config["recipe"]) == ("generator" in uses)
    assert ("z_dim" in config["recipe"]["train"]) == (kind in ("unconditional", "infogan", "conditional", "acgan",
                                                               "stylegan2"))
    _no_local_path_in(folder, tmp_path, run, digits)
    snippet = _card_code(folder)
    monkeypatch.chdir(folder.parent)
    scope = {}
    exec(compile(snippet, "README.md", "exec"), scope)  # noqa: S102
    assert all(torch.is_tensor(scope[n]) and torch.isfinite(scope[n].float()).all() for n in names)
    for name in config["networks"]:
        assert f'run.network("{name}")' in snippet
