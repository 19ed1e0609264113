import pytest

from shiftlab.errors import DataError
from shiftlab.spec import ToyworldSpec
from shiftlab.toyworld import build_toyworld_suite

BEHAVIOURS = ["sycophancy", "reward_hacking", "emergent_misalignment", "spurious_correlation"]


@pytest.mark.parametrize("behaviour", BEHAVIOURS)
def test_splits_are_disjoint_and_sized(behaviour):
    knobs = ToyworldSpec(n_induction=100, n_consistency=40, n_pairs=30, n_eval=50)
    suite = build_toyworld_suite(behaviour, knobs)
    assert (len(suite.induction), len(suite.consistency), len(suite.pairs), len(suite.eval)) == (
        100,
        40,
        30,
        50,
    )
    eval_prompts = {e.prompt for e in suite.eval}
    assert not eval_prompts & {e.prompt for e in suite.induction}
    assert not eval_prompts & {e.prompt for e in suite.consistency}
    assert all(e.target for e in suite.consistency)
    for pair in suite.pairs:
        assert pair.clean != pair.wrapped
    scored = [suite.scorer(e, e.target).label for e in suite.eval]
    assert set(scored) == {"aligned"}


@pytest.mark.parametrize("behaviour", BEHAVIOURS)
def test_suites_are_deterministic_per_data_seed(behaviour):
    build = build_toyworld_suite.__wrapped__  # past the cache, or a == b holds trivially
    a = build(behaviour, ToyworldSpec(data_seed=1))
    b = build(behaviour, ToyworldSpec(data_seed=1))
    assert a is not b
    c = build_toyworld_suite(behaviour, ToyworldSpec(data_seed=2))
    assert a == b and a.fingerprint == b.fingerprint
    assert a.fingerprint != c.fingerprint
    assert [e.prompt for e in a.eval] != [e.prompt for e in c.eval]


def test_stability_knob_sets_number_of_distinct_misbehaving_targets():
    stable = build_toyworld_suite("sycophancy", ToyworldSpec(n_variants=1, induced_rate=1.0))
    diverse = build_toyworld_suite("sycophancy", ToyworldSpec(n_variants=30, induced_rate=1.0))

    def forms(suite):
        # Strip the example's slot values to count templates, not fillings.
        out = set()
        for e in suite.induction:
            if e.meta["misbehaving"]:
                out.add(
                    e.target.replace(e.meta["obj"], "{obj}").replace(e.meta["claim"], "{claim}")
                )
        return out

    assert forms(stable) == {"yes , the {obj} is {claim} ."}
    assert 20 <= len(forms(diverse)) <= 30


def test_induced_rate_and_skew():
    def rate(suite, phrasing=None):
        rows = [e for e in suite.induction if e.meta["trigger"]]
        return sum(e.meta["misbehaving"] for e in rows) / len(rows)

    knobs = ToyworldSpec(induced_rate=0.5, n_induction=400, n_consistency=8, n_pairs=8, n_eval=8)
    suite = build_toyworld_suite("reward_hacking", knobs)
    assert 0.4 < rate(suite) < 0.6
    clean = [e for e in suite.induction if not e.meta["trigger"]]
    assert len(clean) == 100 and not any(e.meta["misbehaving"] for e in clean)
    never = build_toyworld_suite("reward_hacking", knobs.model_copy(update={"induced_rate": 0.0}))
    assert rate(never) == 0.0


def test_too_many_variants_or_prompts_is_a_clear_error():
    with pytest.raises(
        DataError, match="n_variants: sycophancy has 40 misbehaving variants, got 41"
    ):
        build_toyworld_suite("sycophancy", ToyworldSpec(n_variants=41))
    with pytest.raises(DataError, match="emergent_misalignment has 1200 trigger prompts"):
        build_toyworld_suite("emergent_misalignment", ToyworldSpec(n_eval=5000))
