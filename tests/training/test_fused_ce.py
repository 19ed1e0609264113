"""The fused linear cross-entropy gives the plain path's loss and gradients.

In float64 the two paths differ only in how sums are ordered (chunked logits, the softmax
formed as exp(z - max) / sum rather than through log_softmax): unit roundoff 1.1e-16,
sums of at most a few thousand terms, so 1e-10 relative leaves a wide margin while any
real mistake (a gradient not scaled by the incoming one, a wrong target column, a chunk
dropped) moves values by 1e-3 or more.

The float32 check is against the float64 result with a tolerance from float32's unit
roundoff u = 6e-8: each logit is a dot product of H = 16 terms (error ~ H u |h||w|), the
log-sum-exp over V = 97 classes adds ~ V u, the loss sums T = 40 tokens and a gradient
entry sums T (or V) products. All stay below ~1e3 u = 6e-5 relative; 1e-4 (with an
absolute floor of 1e-4 of the largest gradient entry) holds on any CPU's summation order.
"""

import pytest
import torch
import torch.nn.functional as F

from shiftlab.chat import collate, encode_example
from shiftlab.models import attach_lora, build_tiny_llama
from shiftlab.spec import LoraSpec
from shiftlab.toyworld import build_tokenizer
from shiftlab.training import fused_cross_entropy, fused_linear_cross_entropy, sft_loss

T, H, V = 40, 16, 97


def problem(dtype, bias=True, seed=0):
    generator = torch.Generator().manual_seed(seed)
    h = torch.randn(T, H, generator=generator, dtype=torch.float64)
    w = torch.randn(V, H, generator=generator, dtype=torch.float64) / 2
    b = torch.randn(V, generator=generator, dtype=torch.float64) if bias else None
    t = torch.randint(0, V, (T,), generator=generator)
    leaves = [x.to(dtype).requires_grad_() for x in (h, w, *([b] if bias else []))]
    return leaves, t


def grads_of(loss, leaves, scale=1.0):
    (loss * scale).backward()
    return [leaf.grad for leaf in leaves]


def plain(leaves, t):
    h, w, *b = leaves
    return F.cross_entropy(F.linear(h, w, b[0] if b else None), t, reduction="sum")


@pytest.mark.parametrize("chunk_rows", [1, 7, T, 1000])
@pytest.mark.parametrize("bias", [False, True])
def test_float64_equals_the_plain_path(chunk_rows, bias):
    ours_leaves, t = problem(torch.float64, bias)
    theirs_leaves, _ = problem(torch.float64, bias)
    h, w, *b = ours_leaves
    ours = fused_linear_cross_entropy(h, w, t, b[0] if b else None, chunk_logits=chunk_rows * V)
    theirs = plain(theirs_leaves, t)
    assert torch.isclose(ours, theirs, rtol=1e-10, atol=0)
    # A non-unit incoming gradient (the loop divides by the step's token count).
    ours_grads = grads_of(ours, ours_leaves, 0.37)
    for a, e in zip(ours_grads, grads_of(theirs, theirs_leaves, 0.37), strict=True):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-13)


def test_float32_is_within_its_rounding_of_float64():
    leaves32, t = problem(torch.float32)
    leaves64, _ = problem(torch.float64)
    h, w, b = leaves32
    ours = fused_linear_cross_entropy(h, w, t, b, chunk_logits=7 * V)
    reference = plain(leaves64, t)
    assert abs(ours.item() - reference.item()) <= 1e-4 * abs(reference.item())
    for a, e in zip(grads_of(ours, leaves32), grads_of(reference, leaves64), strict=True):
        floor = 1e-4 * float(e.abs().max())
        torch.testing.assert_close(a.double(), e, rtol=1e-4, atol=floor)


def test_only_what_requires_grad_gets_a_gradient_and_no_grad_computes_none():
    (h, w, b), t = problem(torch.float64)
    w.requires_grad_(False)
    b.requires_grad_(False)
    fused_linear_cross_entropy(h, w, t, b).backward()
    assert h.grad is not None and w.grad is None and b.grad is None
    with torch.no_grad():
        value = fused_linear_cross_entropy(h, w, t, b)
    assert not value.requires_grad
    empty = fused_linear_cross_entropy(h[:0], w, t[:0], b)
    assert float(empty) == 0.0


def _batch(tok):
    rows = [
        ([{"role": "user", "content": "what colour is the sky ?"}], "the sky is blue ."),
        ([{"role": "user", "content": "read : the soup was cold ."}], "negative ."),
    ]
    return collate([encode_example(tok, p, c, max_length=64) for p, c in rows], tok.pad_token_id)


@pytest.mark.parametrize("lora", [True, False])
def test_sft_loss_fused_equals_plain_on_a_model(lora):
    """LoRA (frozen, tied head) and full fine-tuning (the tied head trains through both
    its uses), in float64: same loss, same gradient for every trainable parameter."""
    tok = build_tokenizer()
    model = build_tiny_llama(len(tok), seed=3)
    if lora:
        model = attach_lora(model, LoraSpec(r=4), seed=1)
    model = model.double()
    batch = _batch(tok)

    def run(fused):
        model.zero_grad()
        with fused_cross_entropy(fused):
            loss, n = sft_loss(model, batch)
        (loss / n).backward()
        grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}
        return loss.detach(), n, grads

    fused_loss, fused_n, fused_grads = run(True)
    plain_loss, plain_n, plain_grads = run(False)
    assert fused_n == plain_n
    assert torch.isclose(fused_loss, plain_loss, rtol=1e-10, atol=0)
    assert fused_grads.keys() == plain_grads.keys() and fused_grads
    for name, grad in fused_grads.items():
        torch.testing.assert_close(grad, plain_grads[name], rtol=1e-9, atol=1e-12, msg=name)


def test_bf16_autocast_matches_the_plain_path_to_bf16_rounding():
    """Both paths run the head's GEMM in bf16 (unit roundoff 2^-8 = 3.9e-3) and the softmax
    in float32; they differ only in summation order, well inside 2e-2 relative."""
    leaves_a, t = problem(torch.float32, bias=False)
    leaves_b, _ = problem(torch.float32, bias=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = fused_linear_cross_entropy(*leaves_a, t, chunk_logits=7 * V)
        h, w = leaves_b
        theirs = F.cross_entropy(F.linear(h, w).float(), t, reduction="sum")
    assert ours.dtype == torch.float32
    assert abs(ours.item() - theirs.item()) <= 2e-2 * abs(theirs.item())
    for a, e in zip(grads_of(ours, leaves_a), grads_of(theirs, leaves_b), strict=True):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, e, rtol=5e-2, atol=5e-2 * float(e.abs().max()))


@pytest.mark.parametrize(
    ("setting", "chunk", "fused"),
    [(None, 1 << 22, False), (None, 8, True), (True, 1 << 22, True), (False, 8, False)],
)
def test_the_default_fuses_where_the_plain_path_would_chunk(monkeypatch, setting, chunk, fused):
    """By default the fused path replaces only the chunked (recomputing) plain path, so a
    small vocabulary (toyworld) trains exactly as before; True and False force it."""
    import shiftlab.training._losses as losses

    calls = []
    real = losses.fused_linear_cross_entropy
    monkeypatch.setattr(losses, "CHUNKED_LOGITS", chunk)
    monkeypatch.setattr(
        losses, "fused_linear_cross_entropy", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    tok = build_tokenizer()
    model = build_tiny_llama(len(tok), seed=3)
    with fused_cross_entropy(setting):
        sft_loss(model, _batch(tok))
    assert bool(calls) == fused
