"""Phase schedules (issue #25 item 2): a discriminator that starts later, an L1-only warm-up,
resumed bitwise across the switch, the same on the graph step; bad settings in one line."""
import json

import pytest
import torch
from safetensors.torch import load_file

from ganforge.training import engine
from ganforge.contract.recipes import load_recipe
from ganforge.training.engine import train
from ganforge.errors import ConfigError

QUICK = ["log.progress=false", "metrics=[]", "log.sample_every=0", "log.film_every=0", "log.animate=false"]
TINY = ["generator.args={ngf: 4}", "discriminator.args={ndf: 4, n_layers: 1}", "data.batch_size=8", "log.every=1"]


@pytest.fixture
def digits(tmp_path):
    from conftest import make_mnist_like

    return make_mnist_like(make_mnist_like(tmp_path / "mnist", n=64), n=40, split="test")


def _weights(run, step, name):
    return load_file(str(run / "checkpoints" / f"step-{step:08d}" / f"{name}.safetensors"))


def test_a_discriminator_that_starts_at_step_3_after_an_l1_warm_up(tmp_path, digits):
    run = tmp_path / "run"
    train(load_recipe("mnist_edges_pix2pix", [f"out_dir={run}", f"data.root={digits}", "train.steps=5",
                                              "phases.D.start=3", "log.checkpoint_every=1", "log.keep=10",
                                              "optim.lr_decay=none", *TINY, *QUICK]))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [("loss_d" in r, "g_gan" in r) for r in rows] == [(False, False)] * 3 + [(True, True)] * 2
    assert all("g_l1" in r for r in rows)  # G trained on L1 alone before D started
    d = [_weights(run, s, "model.D") for s in (1, 2, 3, 4)]
    assert all(torch.equal(d[0][k], d[2][k]) for k in d[0])  # D untouched in steps 0-2
    assert any(not torch.equal(d[2][k], d[3][k]) for k in d[0])  # and trained in step 3
    g = [_weights(run, s, "model.G") for s in (1, 2)]
    assert any(not torch.equal(g[0][k], g[1][k]) for k in g[0])


def test_resume_across_the_phase_switch_is_bitwise(tmp_path, digits):
    from ganforge.contract.manager import PluginManager
    from test_reliability import _InterruptAt

    common = [f"data.root={digits}", "phases.D.start=3", "train.steps=6", *TINY, *QUICK]
    train(load_recipe("mnist_edges_pix2pix", [f"out_dir={tmp_path / 'a'}", *common]))
    pm = PluginManager()
    pm.register(_InterruptAt(2), name="interrupt")  # stopped before the switch, as a user would
    assert train(load_recipe("mnist_edges_pix2pix", [f"out_dir={tmp_path / 'b'}", *common]), plugins=pm).step == 2
    train(load_recipe("mnist_edges_pix2pix", [f"out_dir={tmp_path / 'b'}", "resume=auto", *common]))
    for name in ("model.G", "model.D", "optim.G", "optim.D"):
        a, b = _weights(tmp_path / "a", 6, name), _weights(tmp_path / "b", 6, name)
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_the_graph_step_runs_a_phase_schedule_like_the_eager_step(tmp_path, digits, monkeypatch):
    """A pattern per set of running phases (D stops after step 4 here, and R1 is lazy)."""
    # (fused Adam on both: the eager step's for-loop Adam rounds the U-Net's updates differently)
    common = [f"data.root={digits}", "phases.D={start: 1, stop: 4}", "penalties=[{name: r1, every: 2}]", "optim.fused=true",
              "train.steps=6", "log.checkpoint_every=6", "train.autocast_cache=false", *TINY, *QUICK]
    eager = train(load_recipe("mnist_edges_pix2pix", [f"out_dir={tmp_path / 'e'}", *common]))
    with monkeypatch.context() as m:
        m.setattr(engine, "reasons_against", lambda state, penalties: [])
        graph = train(load_recipe("mnist_edges_pix2pix", [f"out_dir={tmp_path / 'g'}", *common]))
    assert graph.stepper.graph and not eager.stepper.graph
    for name in ("model.G", "model.D"):
        a, b = _weights(tmp_path / "e", 6, name), _weights(tmp_path / "g", 6, name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert {p.running for p in graph.stepper.seen} == {(False, True), (True, True)}  # D off / on, G on
    rows = [json.loads(line) for line in (tmp_path / "g" / "metrics.jsonl").read_text().splitlines()]
    assert [("loss_d" in r) for r in rows] == [False, True, True, True, False, False]
    assert eager.phase_steps == graph.phase_steps == {"D": 3, "G": 6}


@pytest.mark.parametrize("overrides, message", [
    (["phases.D.start=10"], "phase 'D' runs from step 10 to the end; it needs 0 <= start < train.steps (10)"),
    (["phases.D={start: 5, stop: 5}"], "it needs 0 <= start < train.steps (10) and start < stop"),
    (["phases.X.start=1"], "the recipe's 'phases' section names phase 'X', but the system has D, G"),
    (["phases.D.start=0.5", "phases.G.start=0.2"], "no phase runs at step 0 (phases: D 5-end, G 2-end)"),
])
def test_bad_phase_settings_get_one_line(tmp_path, overrides, message):
    with pytest.raises(ConfigError) as err:
        train(load_recipe("toy_grid", [f"out_dir={tmp_path}", "train.steps=10", *overrides, *QUICK]))
    assert message in str(err.value) and "\n" not in str(err.value)
