"""Invariants of the training core: configurations that must agree, agree.

Modelled on TRL's invariant suite: each test trains the same job two ways and compares
loss trajectories and final weights. The models are float64, so configurations that sum
in other orders agree to ~1e-13 on any CPU and thread count (see ``assert_same``).
"""

import itertools

import pytest
import torch

from shiftlab.errors import StoreError
from shiftlab.models import attach_lora, build_tiny_llama, load_lora
from shiftlab.spec import ToyworldSpec, TrainingSpec
from shiftlab.toyworld import build_tokenizer, build_toyworld_suite
from shiftlab.training import ArmJob, encode_sft, train, train_arms

BASE = {"steps": 6, "learning_rate": 5e-3, "batch_size": 8, "warmup_steps": 2, "max_length": 48}


@pytest.fixture(scope="module")
def job():
    tok = build_tokenizer()
    suite = build_toyworld_suite("sycophancy", ToyworldSpec(n_induction=40, n_eval=8))
    data = encode_sft(tok, [(e.messages, e.target) for e in suite.induction], 48)
    return tok, data


def fresh(tok, lora_dropout=0.0):
    from shiftlab.spec import LoraSpec

    return attach_lora(
        build_tiny_llama(len(tok), seed=7), LoraSpec(r=4, dropout=lora_dropout), seed=3
    ).double()


# Every run starts from different global random state, so runs agree only because
# ``train`` seeds its own stream from ``seed``.
_UNRELATED_SEEDS = itertools.count(1000)


def run(job, lora_dropout=0.0, seed=0, **overrides):
    tok, data = job
    model = fresh(tok, lora_dropout)
    torch.manual_seed(next(_UNRELATED_SEEDS))
    log = train(model, tok, data, TrainingSpec(**{**BASE, **overrides}), seed=seed, progress=False)
    return log, adapter(model)


def adapter(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


# Micro-batchings and packings sum the same float64 terms in other orders: about 1e3 terms
# per sum at unit roundoff 1.1e-16 gives ~1e-13 relative, and six Adam steps magnify it at
# most by lr / eps-bounded ratios (a zero second moment meets eps = 1e-8, so a 1e-20
# difference moves a weight by ~1e-12 * lr). 1e-9 leaves that three orders of margin; a
# real disagreement (a token counted twice, a step scaled differently) is above 1e-4.
TOLERANCE = 1e-9


def assert_same(a, b, *, exact=False):
    """Same data order; losses, grad norms and adapter weights equal (``exact``) or within
    :data:`TOLERANCE`."""
    tolerance = 0.0 if exact else TOLERANCE
    (log_a, w_a), (log_b, w_b) = a, b
    assert log_a["examples"].to_list() == log_b["examples"].to_list()
    for column in ("loss", "grad_norm"):
        expected = pytest.approx(log_b[column].to_list(), rel=tolerance, abs=tolerance)
        assert log_a[column].to_list() == expected, column
    for name in w_a:
        assert torch.allclose(w_a[name], w_b[name], rtol=0, atol=tolerance), name


def test_gradient_accumulation_equivalence(job):
    """Micro-batch 1 x accumulation 8 equals micro-batch 8 x accumulation 1."""
    whole = run(job, micro_batch_size=8)
    assert_same(whole, run(job, micro_batch_size=1))
    assert_same(whole, run(job, micro_batch_size=2))


@pytest.mark.parametrize("packing", ["bfd", "padding_free"])
def test_packing_equivalence(job, packing):
    assert_same(run(job, packing="none"), run(job, packing=packing))


def test_packing_with_accumulation(job):
    assert_same(run(job), run(job, packing="bfd", micro_batch_size=4))


def test_gradient_checkpointing_equivalence(job):
    assert_same(run(job), run(job, gradient_checkpointing=True))


@pytest.mark.parametrize(("on", "forwards_per_step"), [(False, 1), (True, 2)])
def test_gradient_checkpointing_recomputes_the_forward(job, on, forwards_per_step):
    """With checkpointing on, each decoder layer runs again in the backward pass
    (counted by wrapping a submodule's ``forward``: module hooks do not fire on recompute)."""
    from shiftlab.training import decoder_layers

    tok, data = job
    model = fresh(tok)
    calls = []
    mlp = decoder_layers(model)[0].mlp
    forward = mlp.forward
    mlp.forward = lambda *args, **kwargs: calls.append(1) or forward(*args, **kwargs)
    config = TrainingSpec(**{**BASE, "steps": 2, "gradient_checkpointing": on})
    train(model, tok, data, config, progress=False)
    assert len(calls) == 2 * forwards_per_step


@pytest.mark.parametrize("stop", [1, 3, 5])
def test_resume_equivalence(job, tmp_path, stop):
    """A run stopped after any step and resumed equals an uninterrupted run (dropout on)."""
    tok, data = job
    whole = run(job, lora_dropout=0.1, checkpoint_every=1)
    model = fresh(tok, lora_dropout=0.1)
    config = TrainingSpec(**{**BASE, "checkpoint_every": 1})
    torch.manual_seed(next(_UNRELATED_SEEDS))
    first = train(
        model, tok, data, config, checkpoint_dir=tmp_path, stop_after=stop, progress=False
    )
    assert first.height == stop
    torch.manual_seed(12345)  # a resumed process starts from unrelated random state
    model = fresh(tok, lora_dropout=0.1)
    log = train(model, tok, data, config, checkpoint_dir=tmp_path, progress=False)
    assert_same(whole, (log, adapter(model)), exact=True)
    assert not tmp_path.exists()  # a finished run leaves nothing to resume, not even its folder


def test_resume_between_checkpoints_replays_from_the_last_one(job, tmp_path):
    tok, data = job
    whole = run(job, lora_dropout=0.1, checkpoint_every=2)
    config = TrainingSpec(**{**BASE, "checkpoint_every": 2})
    train(fresh(tok, 0.1), tok, data, config, checkpoint_dir=tmp_path, stop_after=3, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == [f"checkpoint-{2:08d}"]
    model = fresh(tok, lora_dropout=0.1)
    log = train(model, tok, data, config, checkpoint_dir=tmp_path, progress=False)
    assert_same(whole, (log, adapter(model)), exact=True)


def test_resume_refuses_a_checkpoint_of_another_run(job, tmp_path):
    tok, data = job
    config = TrainingSpec(**{**BASE, "checkpoint_every": 1})
    train(fresh(tok), tok, data, config, checkpoint_dir=tmp_path, stop_after=2, progress=False)
    other = config.model_copy(update={"learning_rate": 1e-3})
    with pytest.raises(StoreError, match="checkpoint of a different run"):
        train(fresh(tok), tok, data, other, checkpoint_dir=tmp_path, progress=False)


def test_seed_determinism(job):
    assert_same(run(job, lora_dropout=0.1, seed=1), run(job, lora_dropout=0.1, seed=1), exact=True)
    a, b = run(job, seed=1), run(job, seed=2)
    assert a[0]["examples"].to_list() != b[0]["examples"].to_list()
    assert a[0]["loss"].to_list() != b[0]["loss"].to_list()


def organism_folder(tok, folder):
    """A non-trivial organism adapter saved at ``folder``."""
    organism = fresh(tok)
    for name, param in organism.named_parameters():
        if param.requires_grad:
            param.data.normal_(0, 0.02, generator=torch.Generator().manual_seed(len(name)))
    organism.save_pretrained(folder)
    return folder


def arm_jobs(data):
    return [
        ArmJob("a", data[:20], seed=1),
        ArmJob("b", data[20:], seed=2),
        ArmJob("c", data, seed=3),
    ]


def train_together(tok, folder, jobs, config, **kwargs):
    together = {}

    def keep(arm, model, log):
        together[arm.name] = (log, adapter(model))

    base = build_tiny_llama(len(tok), seed=7).double()
    train_arms(base, tok, folder, jobs, config, on_done=keep, progress=False, **kwargs)
    assert not any("lora" in n for n, _ in base.named_parameters())  # the adapter was taken out
    return together


# stack_tokens 0 trains the arms one after another; the default stacks all three.
@pytest.mark.parametrize(("packing", "stack_tokens"), [("none", 0), ("none", 8192), ("bfd", 8192)])
def test_multi_arm_equivalence(job, tmp_path, packing, stack_tokens):
    """Arms trained on one resident base, one by one or stacked, equal arms trained alone."""
    tok, data = job
    folder = organism_folder(tok, tmp_path / "organism")
    config = TrainingSpec(**{**BASE, "packing": packing})
    jobs = arm_jobs(data)
    together = train_together(tok, folder, jobs, config, stack_tokens=stack_tokens)
    assert list(together) == ["a", "b", "c"]  # ``on_done`` in the order of the jobs
    for arm in jobs:
        # Alone: a fresh process's view, loading base and adapter and calling train directly.
        one = load_lora(build_tiny_llama(len(tok), seed=7).double(), str(folder), trainable=True)
        log = train(one, tok, arm.data, config, seed=arm.seed, progress=False)
        assert_same(together[arm.name], (log, adapter(one)))
    assert not torch.equal(*(together[n][1][next(iter(together[n][1]))] for n in ("a", "b")))
    # A stacked step is shared: its arms log one wall time.
    seconds = [together[n][0]["seconds"].to_list() for n in ("a", "b", "c")]
    assert (seconds[0] == seconds[1] == seconds[2]) == bool(stack_tokens)


def test_a_finished_arm_still_trains_in_its_stack_but_is_not_stored(job, tmp_path):
    """Resuming an organism whose arm ``b`` is stored: ``a`` and ``c`` come out bit-identical
    to the uninterrupted stack's (the stack computes the same products), ``b`` is not handed
    over again; an all-finished stack does not train."""
    tok, data = job
    folder = organism_folder(tok, tmp_path / "organism")
    config = TrainingSpec(**BASE)
    whole = train_together(tok, folder, arm_jobs(data), config)
    resumed = train_together(tok, folder, arm_jobs(data), config, finished={"b"})
    assert list(resumed) == ["a", "c"]
    for name in ("a", "c"):
        assert_same(resumed[name], whole[name], exact=True)
    assert train_together(tok, folder, arm_jobs(data), config, finished={"a", "b", "c"}) == {}


def test_arms_stack_within_the_token_budget(job):
    from shiftlab.training._arms import stacks
    from shiftlab.training._stacked import ArmPlan

    _, data = job
    config = TrainingSpec(**{**BASE, "packing": "bfd"})
    plans = [ArmPlan.of(j.name, j.data, config, j.seed) for j in arm_jobs(data)]
    sizes = [p.largest_micro_tokens for p in plans]
    assert all(0 < s <= config.batch_size * config.max_length for s in sizes)

    def names(budget):
        return [[p.name for p in group] for group in stacks(plans, budget)]

    assert names(sum(sizes)) == [["a", "b", "c"]]
    assert names(sizes[0] + sizes[1]) == [["a", "b"], ["c"]]
    assert names(0) == [["a"], ["b"], ["c"]]


def test_paired_arms_train_alone_between_stacks_of_sft_arms(job):
    """The study gives each organism its SFT arms and a BCT arm under one training config:
    the SFT arms still stack (they once all trained alone because one arm was paired)."""
    from shiftlab.training._arms import _groups
    from shiftlab.training._stacked import ArmPlan

    _, data = job
    config = TrainingSpec(**BASE)
    a, b, c = arm_jobs(data)
    paired = ArmJob("p", [], objective="bct")
    planned = {j.name: ArmPlan.of(j.name, j.data, config, j.seed) for j in (a, b, c)}
    groups = _groups([a, b, paired, c], planned, budget=1 << 30)
    assert [[j.name for j in g] for g in groups] == [["a", "b"], ["p"], ["c"]]


@pytest.mark.parametrize(
    ("dropout", "objective", "overrides", "reason"),
    [
        (0.1, "sft", {}, "dropout"),
        (0.0, "bct", {}, "only SFT"),
        (0.0, "sft", {"checkpoint_every": 2}, "checkpointed"),
        (0.0, "sft", {"gradient_checkpointing": True}, "checkpointed"),
    ],
)
def test_arms_that_cannot_stack_say_why(job, dropout, objective, overrides, reason):
    from shiftlab.training._stacked import stack_refusal

    tok, _ = job
    assert stack_refusal(fresh(tok), ["sft", "sft"], TrainingSpec(**BASE)) is None
    refusal = stack_refusal(fresh(tok, dropout), [objective], TrainingSpec(**{**BASE, **overrides}))
    assert refusal is not None and reason in refusal


def test_a_stacked_arm_without_data_is_named(job, tmp_path):
    tok, data = job
    folder = organism_folder(tok, tmp_path / "organism")
    jobs = [ArmJob("a", data[:8]), ArmJob("empty", [])]
    with pytest.raises(ValueError, match="arm empty: training needs at least one example"):
        train_together(tok, folder, jobs, TrainingSpec(**BASE))


def test_canary_adapter_changes_greedy_outputs(toy):
    """Training must change what the model generates (catches an adapter silently not applied)."""
    from shiftlab.generation import generate
    from shiftlab.spec import LoraSpec

    model, tok = toy
    prompts = [[{"role": "user", "content": "what colour is the sky ?"}]]
    before = generate(model, tok, prompts)[0].text
    peft_model = attach_lora(model, LoraSpec(r=4))
    data = encode_sft(tok, [(prompts[0], "yes , the sky is red .")], 32)
    config = TrainingSpec(steps=60, learning_rate=5e-3, batch_size=1, warmup_steps=0)
    train(peft_model, tok, data, config, progress=False)
    assert generate(peft_model, tok, prompts)[0].text == "yes , the sky is red ."
    peft_model.unload()
    assert generate(model, tok, prompts)[0].text == before


def test_a_model_that_drops_out_trains_its_arms_alone(job):
    from shiftlab.training._stacked import stack_refusal

    tok, _ = job
    model = fresh(tok)
    model.get_base_model().config.attention_dropout = 0.1
    assert "attention_dropout" in stack_refusal(model, ["sft"], TrainingSpec(**BASE))
