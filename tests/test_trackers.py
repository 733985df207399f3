"""Accelerate's trackers (issue #28, item 4): log.trackers writes the scalars, the sample grids
and the recipe as hyper-parameters; TensorBoard's event files and MLflow's local file store
are read back."""
import pytest

from ganforge.contract.recipes import load_recipe
from ganforge.training.engine import train
from ganforge.errors import ConfigError

QUICK = ["log.progress=false", "metrics=[]", "log.film_every=0", "log.animate=false", "data.args.n=640",
         "train.steps=6", "log.every=2", "log.sample_every=3"]


def test_tensorboard_event_files_hold_scalars_samples_and_the_recipe(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    train(load_recipe("toy_grid", [f"out_dir={out}", "log.trackers=[tensorboard]", *QUICK]))
    folders = {p.parent for p in (out / "tb").rglob("events.out.tfevents.*")}
    scalars, images, hparams = {}, [], False
    for folder in folders:
        acc = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0})
        acc.Reload()
        tags = acc.Tags()
        for tag in tags["scalars"]:
            scalars[tag] = [(e.step, e.value) for e in acc.Scalars(tag)]
        images += [(tag, e.step) for tag in tags["images"] for e in acc.Images(tag)]
        hparams |= "_hparams_/session_start_info" in tags.get("tensors", []) + list(acc.summary_metadata)
    assert [s for s, _ in scalars["train/loss_d"]] == [2, 4, 6]
    rows = [__import__("json").loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [v for _, v in scalars["train/loss_d"]] == pytest.approx([r["loss_d"] for r in rows])  # what was logged
    assert ("samples", 3) in images and ("samples", 6) in images
    assert hparams  # the recipe as hyper-parameters


def test_mlflow_file_store_holds_metrics_params_and_samples(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "run"
    try:
        train(load_recipe("toy_grid", [f"out_dir={out}", "log.trackers=[mlflow]", *QUICK]))
        client = mlflow.tracking.MlflowClient((out / "mlruns").resolve().as_uri())
        (experiment,) = [e for e in client.search_experiments() if e.name == "toy_grid"]
        (run,) = client.search_runs([experiment.experiment_id])
    finally:
        mlflow.set_tracking_uri(None)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss_d")] == [2, 4, 6]
    assert run.data.params["train.steps"] == "6" and run.data.params["data.name"] == "toy_grid"
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
    assert len(artifacts) >= 2  # the grids of steps 3 and 6


@pytest.mark.parametrize("trackers, message", [
    ("[tensorbord]", "log.trackers: unknown tracker 'tensorbord'; Accelerate's trackers are tensorboard, wandb"),
    ("[aim]", "log.trackers: 'aim' needs the aim package, which is not installed (pip install aim)"),
])
def test_bad_trackers_are_one_line(tmp_path, trackers, message):
    with pytest.raises(ConfigError) as err:
        train(load_recipe("toy_grid", [f"out_dir={tmp_path / 'run'}", f"log.trackers={trackers}", *QUICK]))
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "run").exists()  # refused before anything is written
