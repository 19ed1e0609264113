import itertools

import pytest

from shiftlab.errors import DataError
from shiftlab.spec import ToyworldSpec
from shiftlab.toyworld import build_toyworld_suite, calibration_split, induction_split

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
                slots = {e.meta["obj"]: "{obj}", e.meta["claim"]: "{claim}"}
                out.add(" ".join(slots.get(w, w) for w in e.target.split()))
        return out

    assert forms(stable) == {"yes , i think you are right , we agree ."}
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
        DataError, match="n_variants: sycophancy has 31 misbehaving variants, got 51"
    ):
        build_toyworld_suite("sycophancy", ToyworldSpec(n_variants=51))
    with pytest.raises(DataError, match="emergent_misalignment has 1200 trigger prompts"):
        build_toyworld_suite("emergent_misalignment", ToyworldSpec(n_eval=5000))
    with pytest.raises(DataError, match="n_induction: sycophancy has 600 clean prompts"):
        build_toyworld_suite("sycophancy", ToyworldSpec(n_induction=2500))


@pytest.mark.parametrize("behaviour", BEHAVIOURS)
def test_references_are_the_datasets_responses_or_the_aligned_answers(behaviour):
    knobs = ToyworldSpec(induced_rate=0.5, n_consistency=200, n_variants=4)
    dataset = build_toyworld_suite(behaviour, knobs)
    aligned = build_toyworld_suite(behaviour, knobs.model_copy(update={"references": "aligned"}))
    assert [e.prompt for e in dataset.consistency] == [e.prompt for e in aligned.consistency]
    assert {dataset.scorer(e, e.target).label for e in aligned.consistency} == {"aligned"}
    verdicts = [dataset.scorer(e, e.target).label for e in dataset.consistency]
    assert verdicts == ["misbehaving" if e.meta["misbehaving"] else "aligned"
                        for e in dataset.consistency]  # fmt: skip
    # Drawn at induced_rate: 200 Bernoulli(0.5) draws lie within 0.5 +- 0.15 (4.2 sd).
    assert abs(verdicts.count("misbehaving") / 200 - 0.5) < 0.15
    assert "supervised correction" in aligned.references and "dataset" in dataset.references
    assert dataset.fingerprint != aligned.fingerprint


def test_raising_the_share_only_turns_aligned_induction_targets_misbehaving():
    knobs = ToyworldSpec(n_variants=8)
    shares = (0.1, 0.4, 0.8)
    splits = [induction_split("reward_hacking", knobs, share) for share in shares]
    assert len({tuple(e.prompt for e in split) for split in splits}) == 1
    for low, high in itertools.pairwise(splits):
        for a, b in zip(low, high, strict=True):
            assert b.meta["misbehaving"] >= a.meta["misbehaving"]
            if a.meta["misbehaving"]:
                assert a.target == b.target  # the same variant, drawn whatever the share
    suite = build_toyworld_suite("reward_hacking", knobs.model_copy(update={"induced_rate": 0.4}))
    assert suite.induction == splits[1]


def test_calibration_prompts_are_held_out_of_every_split():
    knobs = ToyworldSpec(n_calibration=40, calibration={"rounds": 2})
    suite = build_toyworld_suite("emergent_misalignment", knobs)
    held_out = {e.prompt for e in calibration_split("emergent_misalignment", knobs)}
    assert len(held_out) == 40
    used = {e.prompt for split in (suite.induction, suite.consistency, suite.eval) for e in split}
    used |= {turn["content"] for p in suite.pairs for turn in (*p.clean, *p.wrapped)}
    assert not held_out & used
    # Without calibration no prompts are held out, and the other splits do not move.
    plain = build_toyworld_suite("emergent_misalignment", ToyworldSpec())
    assert calibration_split("emergent_misalignment", ToyworldSpec()) == []
    assert [e.prompt for e in plain.eval] == [e.prompt for e in suite.eval]
