"""What a new user meets first (issue #28, first contact): the version, train's help, what
``eval`` says it evaluated, a 2-D sample picture, and public helpers taking ``str`` paths."""
import json
from importlib.metadata import version

import numpy as np
import pytest

from conftest import write_idx


def test_version_is_the_installed_distributions(run_cli, capsys):
    with pytest.raises(SystemExit) as done:
        run_cli("--version")
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"ganforge {version('ganforge')}"


def test_train_help_says_where_recipes_outputs_and_resume_are(run_cli, capsys):
    with pytest.raises(SystemExit):
        run_cli("train", "--help")
    text = capsys.readouterr().out
    for part in ("ganforge recipe list", "ganforge recipe show NAME", "runs/<recipe name>/", "resume=auto",
                 "accelerate launch --config_file recipes/accelerate/cpu_2proc.yaml"):
        assert part in text, part


def test_eval_names_the_checkpoint_it_used_and_a_2d_picture_has_no_empty_data_entry(tmp_path, run_cli, monkeypatch):
    code, _, err = run_cli("train", "toy_grid", f"out_dir={tmp_path}", "train.steps=20", "log.checkpoint_every=10",
                           "log.progress=false", "metrics=[]", "log.sample_every=0", "data.args.n=640")
    assert code == 0, err
    code, out, err = run_cli("eval", tmp_path, "--n", "500", "--metric", "mixture")
    assert code == 0, err
    assert json.loads(out)["checkpoint"] == str(tmp_path / "checkpoints" / "step-00000020")  # the newest, named
    import matplotlib.axes

    labels = []
    real_scatter = matplotlib.axes.Axes.scatter

    def recording(self, *args, label=None, **kwargs):
        labels.append(label)
        return real_scatter(self, *args, label=label, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "scatter", recording)
    code, _, err = run_cli("sample", tmp_path, "--out", tmp_path / "s.png", "--n", "100")
    assert code == 0, err
    assert labels == ["generated"]  # no "data" entry without data points
    assert (tmp_path / "s.png").stat().st_size > 1000


def test_read_idx_takes_a_str_path(tmp_path):
    from ganforge.plugins.image.idx import read_idx

    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / "x-idx3-ubyte", array)
    assert np.array_equal(read_idx(str(path)), array)
