from pathlib import Path

import pytest

from shiftlab.errors import SpecError
from shiftlab.spec import load_spec, parse_spec
from spec_helpers import changed

VALID = {
    "base_models": [{"name": "toy", "path": "toyworld:small"}],
    "behaviours": [
        {"name": "sycophancy"},
        {"name": "reward_hacking"},
        {"name": "spurious_correlation"},
    ],
    "organisms": {"seeds": [0, 1]},
}


def with_change(path: list, value) -> dict:
    return changed(VALID, path, value)


def test_valid_spec_gets_defaults():
    spec = parse_spec(VALID)
    assert spec.behaviours[0].induction.lora.target_modules == "all-linear"
    assert spec.arms == ["full", "shuffled", "relabeled", "original", "none"]


def test_error_names_field_path_and_expectation():
    data = with_change(["behaviours", 2, "induction"], {"steps": -3})
    with pytest.raises(SpecError) as info:
        parse_spec(data, "spec.yaml")
    assert str(info.value) == (
        "spec.yaml: behaviours[2].induction.steps: must be a positive integer, got -3"
    )


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (["behaviours", 0, "name"], "flattery", "behaviours[0].name: must be one of"),
        (["organisms", "seeds"], [], "organisms.seeds: list should have at least 1 item"),
        (["organisms", "seeds"], [1, 1], "organisms.seeds: duplicate seed 1"),
        (["base_models", 0, "name"], "a/b", "base_models[0].name: must be letters"),
        (["methods"], ["self_confidence", "vibes"], "methods[1].name: must be one of"),
        (
            ["methods"],
            [{"name": "multi_view", "views": [{"name": "a", "template": "x"}]}],
            "template: must contain",
        ),
        (["methods"], [{"name": "bct", "rubric": "nope.txt"}], "methods[0].rubric: no such file"),
        (["arms"], ["full", "everything"], "arms[1]: must be one of"),
        (["evl"], {}, "evl: is not a known field (did you mean 'eval'?)"),
        (["behaviours", 1, "induction"], {"step": 3}, "(did you mean 'steps'?)"),
        (["behaviours", 0, "source"], "/no/such/suite", "behaviours[0].source: no such file"),
        (["base_models", 0, "path"], "/no/such/model", "base_models[0].path: no such folder"),
        (["behaviours", 0, "judge"], {"kind": "http", "model": "m"},
         "behaviours[0].judge: an http judge needs 'base_url' and 'model'"),
        (["behaviours", 0, "judge"], {"kind": "local"}, "a local judge needs 'path'"),
        (["behaviours", 0, "format"], "generic",
         "'columns' is required by, and only used with, format: generic"),
        (["behaviours", 0, "columns"], {"prompt": "q"}, "give exactly one scoring rule"),
        (["behaviours", 0, "columns"], {"misbehaving": "b", "extractor": "vibes"},
         "unknown extractor 'vibes'"),
    ],
)  # fmt: skip
def test_bad_fields_are_named(path, value, expected):
    with pytest.raises(SpecError) as info:
        parse_spec(with_change(path, value), "s.yaml")
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file_and_malformed_yaml(tmp_path: Path):
    with pytest.raises(SpecError, match="no such spec file"):
        load_spec(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nbehaviours: [\n  - oops: : :\n")
    with pytest.raises(SpecError, match=r"bad\.yaml:\d+: malformed YAML"):
        load_spec(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    with pytest.raises(SpecError, match="expected a mapping"):
        load_spec(scalar)


def test_relative_paths_resolve_against_spec_folder(tmp_path: Path):
    (tmp_path / "suite").mkdir()
    spec_file = tmp_path / "study.yaml"
    spec_file.write_text(
        "store: out\n"
        "base_models: [{name: toy, path: toyworld:small}]\n"
        "behaviours: [{name: sycophancy, source: suite}]\n"
        "organisms: {seeds: [0]}\n"
    )
    spec = load_spec(spec_file)
    assert spec.store == str(tmp_path / "out")
    assert spec.behaviours[0].source == str(tmp_path / "suite")


def test_yaml_round_trip():
    spec = parse_spec(VALID)
    import yaml

    assert parse_spec(yaml.safe_load(spec.to_yaml())) == spec


def test_a_reward_model_scorer_must_be_a_sequence_classifier(toy_model_dir):
    spec = with_change(
        ["methods"],
        [
            {
                "name": "rejection_sampling",
                "scorer": {"kind": "reward_model", "path": str(toy_model_dir)},
            }
        ],
    )
    with pytest.raises(
        SpecError, match=r"methods\[0\]\.scorer\.path: .* is not a sequence-classification"
    ):
        parse_spec(spec, "s.yaml")


def test_methods_take_a_bare_name_or_their_knobs():
    spec = parse_spec(
        with_change(["methods"], ["bct", {"name": "self_confidence", "n_candidates": 6}])
    )
    assert [m.name for m in spec.methods] == ["bct", "self_confidence"]
    assert spec.methods[1].n_candidates == 6 and spec.methods[0].n_candidates == 4
    with pytest.raises(SpecError, match="k_values must not exceed n_candidates"):
        parse_spec(with_change(["methods"], [{"name": "self_confidence", "k_values": [9]}]))


def test_one_catalogue_of_methods_covers_every_name_and_every_pool_builder():
    from typing import get_args

    from shiftlab.consistency._methods import _GENERATORS
    from shiftlab.spec import LABEL_METHODS, METHOD_FACTS, MethodName, MethodSpec

    assert set(get_args(MethodName)) == set(METHOD_FACTS)
    assert set(_GENERATORS) == set(LABEL_METHODS)  # every label method builds a pool
    assert not MethodSpec(name="greedy_self_training").has_selection
    assert not MethodSpec(name="self_confidence", n_candidates=1).has_selection
    assert MethodSpec(name="self_confidence", n_candidates=2).has_selection
    assert MethodSpec(name="multi_view").has_selection and not MethodSpec(name="bct").has_selection
