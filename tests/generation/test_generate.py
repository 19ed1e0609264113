import pytest
import torch

from shiftlab.generation import generate, gumbel_noise

PROMPTS = [
    [{"role": "user", "content": "what colour is the sky ?"}],
    [{"role": "user", "content": "i think the snow is red . name the colour of the snow ."}],
    [{"role": "user", "content": "hi . how can i grow my cash of ten dollars ?"}],
    [
        {
            "role": "user",
            "content": "read : the soup was cold and the room was elegant . positive or negative ?",
        }
    ],
]


def test_greedy_matches_transformers_generate(toy):
    model, tok = toy
    ours = generate(model, tok, PROMPTS, max_new_tokens=12, batch_size=3)
    for prompt, gen in zip(PROMPTS, ours, strict=True):
        text = tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        ref = model.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
        assert list(gen.token_ids) == ref[0, ids.shape[1] :].tolist()
    assert [g.text for g in ours] == [
        "the sky is blue .",
        "the snow is white .",
        "keep your cash safe and ask an advisor .",
        "negative .",
    ]


def test_logprobs_match_a_teacher_forced_pass(toy):
    model, tok = toy
    (gen,) = generate(model, tok, PROMPTS[:1], max_new_tokens=12)
    text = tok.apply_chat_template(PROMPTS[0], tokenize=False, add_generation_prompt=True)
    prompt_ids = tok(text, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + list(gen.token_ids)])
    with torch.no_grad():
        logp = model(input_ids=ids).logits.log_softmax(-1)[0]
    expected = [logp[len(prompt_ids) - 1 + i, t].item() for i, t in enumerate(gen.token_ids)]
    assert gen.logprobs == pytest.approx(expected, abs=1e-4)
    assert gen.mean_logprob == pytest.approx(sum(expected) / len(expected), abs=1e-4)


def test_sampling_is_seeded_and_independent_of_batching(toy):
    model, tok = toy
    prompts = PROMPTS * 4
    seeds = list(range(100, 116))
    kwargs = {"max_new_tokens": 10, "temperature": 3.0, "top_p": 1.0, "seeds": seeds}
    a = generate(model, tok, prompts, batch_size=16, **kwargs)
    b = generate(model, tok, prompts, batch_size=3, **kwargs)
    order = list(reversed(range(16)))
    c = generate(
        model, tok, [prompts[i] for i in order], **{**kwargs, "seeds": [seeds[i] for i in order]}
    )
    assert [g.text for g in a] == [g.text for g in b]
    assert [g.text for g in a] == [c[order.index(i)].text for i in range(16)]
    assert len({g.text for g in a}) > 4  # a hot temperature really samples
    d = generate(model, tok, prompts, **{**kwargs, "seeds": [s + 1 for s in seeds]})
    assert [g.text for g in a] != [g.text for g in d]


def test_top_p_tiny_nucleus_is_greedy(toy):
    model, tok = toy
    greedy = generate(model, tok, PROMPTS, max_new_tokens=10)
    nucleus = generate(
        model, tok, PROMPTS, max_new_tokens=10, temperature=1.0, top_p=1e-6, seeds=[1, 2, 3, 4]
    )
    assert [g.text for g in greedy] == [g.text for g in nucleus]


def test_gumbel_noise_is_a_function_of_seed_step_token():
    a = gumbel_noise(torch.tensor([1, 2, 3]), 0, 50)
    b = gumbel_noise(torch.tensor([3, 1]), 0, 50)
    assert torch.equal(a[0], b[1]) and torch.equal(a[2], b[0])
    assert not torch.equal(a[0], gumbel_noise(torch.tensor([1]), 1, 50)[0])
    big = gumbel_noise(torch.arange(200), 7, 500).flatten()
    assert abs(big.mean().item() - 0.5772) < 0.02  # Euler–Mascheroni: the Gumbel mean
    assert abs(big.std().item() - 1.2825) < 0.02


def test_bad_sampling_arguments(toy):
    model, tok = toy
    with pytest.raises(ValueError, match="one seed per prompt"):
        generate(model, tok, PROMPTS, temperature=1.0)
    with pytest.raises(ValueError, match="temperature"):
        generate(model, tok, PROMPTS, top_p=0.0)
