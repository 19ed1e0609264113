import pytest
import torch
from safetensors import safe_open

from shiftlab.toyworld import base_recipe_hash, shipped_weights


@pytest.mark.parametrize("name", ["small", "small-instruct", "small-seed1"])
def test_shipped_weights_match_the_current_recipe(name):
    """If this fails, the world or the recipe changed: retrain with
    ``python -m shiftlab.toyworld.retrain NAME`` and commit the new weights file."""
    with safe_open(str(shipped_weights(name)), framework="pt") as handle:
        assert handle.metadata()["recipe_hash"] == base_recipe_hash(name)


def test_shipped_base_is_aligned_on_every_behaviour(toy):
    from shiftlab.behaviours import evaluate_behaviour
    from shiftlab.spec import ToyworldSpec
    from shiftlab.toyworld import build_toyworld_suite

    behaviours = ("sycophancy", "reward_hacking", "emergent_misalignment", "spurious_correlation")
    for behaviour in behaviours:
        suite = build_toyworld_suite(behaviour, ToyworldSpec(n_eval=48))
        _, rate = evaluate_behaviour(*toy, suite, max_new_tokens=16)
        assert rate.rate == 0.0 and rate.n_unparseable == 0, behaviour


@pytest.mark.slow
def test_recipe_reproduces_the_shipped_weights():
    from safetensors.torch import load_file

    from shiftlab.toyworld import train_base_model

    model, _ = train_base_model("small", progress=False)
    shipped = load_file(str(shipped_weights("small")))
    trained = model.state_dict()
    for name, tensor in shipped.items():
        assert torch.allclose(trained[name], tensor, atol=1e-4), name


def test_the_recipe_trains_with_the_whole_last_layer(monkeypatch):
    # The shipped weights were trained so; a narrowed last layer would change their bits.
    from shiftlab import _last_layer
    from shiftlab.toyworld import _base_model, train_base_model

    def narrowed(*args, **kwargs):
        raise AssertionError("the base recipe ran the last layer at selected positions")

    monkeypatch.setattr(_last_layer, "_layer_at", narrowed)
    monkeypatch.setitem(_base_model.RECIPE, "steps", 2)
    monkeypatch.setitem(_base_model.RECIPE, "corpus_size", 64)
    model, _ = train_base_model("small", progress=False)
    assert model.training is False
