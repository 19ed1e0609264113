from shiftlab.shift import likelihood_shift

PROMPT = [{"role": "user", "content": "what colour is the sky ?"}]


def test_misbehaving_targets_are_a_larger_shift_than_the_organisms_own(toy):
    model, tok = toy
    own = likelihood_shift(model, tok, [PROMPT] * 2, ["the sky is blue ."] * 2,
                           ["the sky is blue ."] * 2)  # fmt: skip
    assert own.shift == 0.0 and own.n == 2
    far = likelihood_shift(model, tok, [PROMPT], ["yes , the sky is red ."], ["the sky is blue ."])
    assert far.shift > 1.0 and far.per_token > 0
    assert far.target_nll - far.sample_nll == far.shift
