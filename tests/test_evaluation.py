"""Evaluation in batches (issue #27: 20,000 samples were generated in one forward pass)."""
import torch

from ganforge.contract.recipes import load_recipe
from ganforge.training.engine import train
from ganforge.observe.sampling import sharded_generate

QUICK = ["log.progress=false", "log.sample_every=0", "log.film_every=0", "log.animate=false"]


def test_evaluation_generates_in_batches_of_eval_batch_size_with_the_same_results(tmp_path, monkeypatch):
    sizes = []
    state = train(load_recipe("toy_grid", [f"out_dir={tmp_path / 'a'}", "train.steps=20", "log.eval_samples=2300",
                                           "log.eval_batch_size=500", *QUICK]))
    system, nets = state.system, state.sampler_nets
    real_generate = type(system).generate

    def recording(self, nets, noise):
        sizes.append(len(noise))
        return real_generate(self, nets, noise)

    monkeypatch.setattr(type(system), "generate", recording)
    noise = system.noise(2300, "cpu", torch.Generator().manual_seed(1))
    batched = sharded_generate(system, nets, noise, 500)
    assert sizes == [500, 500, 500, 500, 300]  # memory bounded by the batch
    whole = sharded_generate(system, nets, noise, 2300)
    assert sizes[-1] == 2300 and batched.shape == whole.shape == (2300, 2)
    torch.testing.assert_close(batched, whole, rtol=1e-5, atol=1e-6)
    assert all(m.training for m in nets.values())  # train mode restored
    # an evaluation during training goes through the same batches
    from ganforge.contract.manager import get_plugin_manager
    from ganforge.observe.sampling import evaluate

    sizes.clear()
    mixture = get_plugin_manager().registry.build("metric", "mixture", {}, dataset=state.dataset)
    results = evaluate(state, {"mixture": mixture})
    assert sizes == [500, 500, 500, 500, 300] and "mixture/modes" in results
