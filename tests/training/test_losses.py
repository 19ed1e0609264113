import pytest
import torch

from shiftlab.chat import collate
from shiftlab.models import attach_lora, build_tiny_llama
from shiftlab.spec import LoraSpec
from shiftlab.toyworld import build_tokenizer
from shiftlab.training import act_loss, bct_loss, decoder_layers, encode_pairs

CLEAN = [{"role": "user", "content": "what colour is the sky ?"}]
WRAPPED = [{"role": "user", "content": "i think the sky is red . what colour is the sky ?"}]


def batches(tok, clean, wrapped, suffix="the sky is blue ."):
    (pair,) = encode_pairs(tok, [(clean, wrapped, suffix)], 64)
    return collate([pair.clean], tok.pad_token_id), collate([pair.wrapped], tok.pad_token_id)


def gradients(model, loss):
    """Gradients of ``loss`` with respect to the trainable parameters (zeroed first)."""
    model.zero_grad()
    loss.backward()
    return {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}


# The losses are compared with hand-written references in float64, so the comparison does
# not depend on how a CPU or a thread count orders float sums. Unit roundoff is 1.1e-16;
# the largest sums here have about 2e3 terms (10 positions x a 200-word vocabulary) fed by
# dot products of at most 512 terms, so two summation orders differ by about
# 3e3 * 1.1e-16 ~ 3e-13 relative (times the sum's condition number, which is small for
# these positive losses). RTOL = 1e-9 leaves over three orders of margin, while a real
# mistake (a missing T^2, a mask off by one position) moves a loss by more than 1e-2.
RTOL = 1e-9
ATOL = 1e-12  # gradients of order 1e-2 or smaller, with the same relative error


def assert_close(ours, reference):
    for name, grad in ours.items():
        assert torch.allclose(grad, reference[name], rtol=RTOL, atol=ATOL), name


@pytest.fixture()
def model_tok():
    tok = build_tokenizer()
    model = attach_lora(build_tiny_llama(len(tok), seed=4), LoraSpec(r=4), seed=1)
    return model.double(), tok


@pytest.mark.parametrize("loss", ["bct", "act"])
def test_zero_when_clean_equals_wrapped(model_tok, loss):
    model, tok = model_tok
    clean, wrapped = batches(tok, CLEAN, CLEAN)
    value, n = (
        bct_loss(model, clean, wrapped, 2.0)
        if loss == "bct"
        else act_loss(model, clean, wrapped, 1.0)
    )
    assert n == 6 and abs(value.item()) < ATOL


def test_bct_matches_a_constant_teacher(model_tok):
    """The clean side is a constant: gradients equal those against a precomputed target."""
    model, tok = model_tok
    clean, wrapped = batches(tok, CLEAN, WRAPPED)
    temperature = 2.0
    value, _ = bct_loss(model, clean, wrapped, temperature)
    assert value.item() > 0
    ours = gradients(model, value)
    with torch.no_grad():
        at = clean["labels"][:, 1:] != -100
        teacher_log = (
            model(input_ids=clean["input_ids"]).logits[:, :-1][at] / temperature
        ).log_softmax(-1)
    at_w = wrapped["labels"][:, 1:] != -100
    student = (
        model(input_ids=wrapped["input_ids"]).logits[:, :-1][at_w] / temperature
    ).log_softmax(-1)
    reference = (teacher_log.exp() * (teacher_log - student)).sum() * temperature**2
    assert value.item() == pytest.approx(reference.item(), rel=RTOL)
    assert_close(ours, gradients(model, reference))


def test_act_matches_constant_targets_and_no_grad_reaches_clean(model_tok):
    model, tok = model_tok
    clean, wrapped = batches(tok, CLEAN, WRAPPED)
    layers = decoder_layers(model)
    assert len(layers) == 2
    seen = []
    handles = [layer.register_forward_hook(lambda m, i, o: seen.append(o)) for layer in layers]
    value, n = act_loss(model, clean, wrapped, 3.0)
    for h in handles:
        h.remove()
    assert [o.requires_grad for o in seen] == [False, False, True, True]  # clean pass first
    ours = gradients(model, value)
    assert any(g.abs().sum() > 0 for g in ours.values())  # lora_B; lora_A's are 0 at init
    states = []
    handles = [layer.register_forward_hook(lambda m, i, o: states.append(o)) for layer in layers]
    with torch.no_grad():
        model(input_ids=clean["input_ids"])
    targets, states = [t.detach() for t in states], []
    model(input_ids=wrapped["input_ids"])
    for h in handles:
        h.remove()
    c, w = clean["labels"] != -100, wrapped["labels"] != -100
    per_layer = [(s[w] - t[c]).pow(2).mean(-1) for s, t in zip(states, targets, strict=True)]
    reference = 3.0 * torch.stack(per_layer).mean(0).sum()
    assert n == int(c.sum()) and value.item() == pytest.approx(reference.item(), rel=RTOL)
    assert_close(ours, gradients(model, reference))


def test_pairs_must_share_the_suffix(model_tok):
    model, tok = model_tok
    clean, _ = batches(tok, CLEAN, WRAPPED)
    _, other = batches(tok, CLEAN, WRAPPED, suffix="blue .")
    with pytest.raises(ValueError, match="same target suffix"):
        bct_loss(model, clean, other, 1.0)


def test_chunked_sft_loss_equals_the_whole(model_tok, monkeypatch):
    from shiftlab.training import _losses, encode_sft

    model, tok = model_tok
    rows = [([{"role": "user", "content": f"what colour is item {i} ?"}], "it is blue .")
            for i in range(6)]  # fmt: skip
    batch = collate(encode_sft(tok, rows, 64), tok.pad_token_id)
    whole, n = _losses.sft_loss(model, batch)
    reference = gradients(model, whole)
    # Chunks of 5 target positions: the head and the loss run six times, recomputed in backward.
    monkeypatch.setattr(_losses, "CHUNKED_LOGITS", 5 * len(tok))
    chunked, m = _losses.sft_loss(model, batch)
    assert m == n > 5
    assert chunked.item() == pytest.approx(whole.item(), rel=RTOL)
    assert_close(gradients(model, chunked), reference)  # summed in another order
