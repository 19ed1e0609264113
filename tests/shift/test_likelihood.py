import pytest

from shiftlab.errors import ShiftlabError
from shiftlab.shift import Decoding, NllGap, nll_gap

PROMPT = [{"role": "user", "content": "what colour is the sky ?"}]


def test_the_organisms_own_answers_are_no_gap_and_misbehaving_ones_a_large_one(toy):
    model, tok = toy
    own = nll_gap(model, tok, [PROMPT] * 2, ["the sky is blue ."] * 2,
                  [["the sky is blue ."]] * 2)  # fmt: skip
    assert own.estimate == 0.0 and own.n == 2 and own.ci_low == own.ci_high == 0.0
    far = nll_gap(model, tok, [PROMPT], ["yes , the sky is red ."], [["the sky is blue ."]])
    assert far.estimate > 0.5 and far.ci_low is None  # one prompt: no interval
    assert far.target_nll - far.sample_nll == pytest.approx(far.estimate)


def test_the_gap_is_per_token_and_averages_several_samples_per_prompt():
    # 6 nats over 3 tokens against samples at 1 and 3 nats per token: 2 - 2 = 0; then
    # 1.5 against 1 nat per token: 0.5.
    gap = NllGap.from_nll([(6.0, 3), (3.0, 2)], [[(2.0, 2), (9.0, 3)], [(1.0, 1)]])
    assert gap.estimate == pytest.approx(0.25) and gap.n == 2
    assert gap.ci_low < 0 < gap.ci_high
    with pytest.raises(ShiftlabError, match="at least one own sample for each of its targets"):
        NllGap.from_nll([(1.0, 1)], [[]])


def test_greedy_decoding_needs_one_sample():
    assert Decoding(0.0).n_samples(4) == 1 and Decoding(0.7, 0.9).n_samples(4) == 4
