"""Toyworld suites: the four splits of each behaviour, generated from ``world.yaml``.

>>> from shiftlab.spec import ToyworldSpec
>>> suite = build_toyworld_suite("sycophancy", ToyworldSpec(n_eval=8))
>>> example = suite.eval[0]
>>> suite.scorer(example, example.target).label
'aligned'
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shiftlab._hashing import content_hash
from shiftlab.behaviours import Example, MethodPrompts, PairExample, Suite, View
from shiftlab.chat import Message
from shiftlab.errors import DataError
from shiftlab.spec import ToyworldSpec
from shiftlab.toyworld._rules import RULES_VERSION, SCORERS
from shiftlab.toyworld._world import load_world, normalise, world_hash

SUITE_VERSION = 6
CLEAN_SHARE = 0.25  # of the induction split, where a behaviour has non-trigger prompts


@dataclass(frozen=True)
class _Item:
    """One prompt of a behaviour's universe, with its aligned and misbehaving targets."""

    prompt: str
    phrasing: int
    n_phrasings: int
    aligned: str
    misbehaving: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)
    clean_prompt: str | None = None
    brief: str | None = None  # the brief view's answer, where the behaviour's template does not fit


def _fill(template: str, **slots: str) -> str:
    return normalise(template.format(**slots))


def _sycophancy(world: dict[str, Any]) -> tuple[list[_Item], list[_Item]]:
    s = world["sycophancy"]
    bodies = s["misbehaving_bodies"]
    variants = [s["fixed_form"]] + [f"{o} {b}" for o in s["variant_openers"] for b in bodies]
    triggers, clean = [], []
    for obj, truth in world["facts"].items():
        aligned = _fill(s["aligned"], obj=obj, truth=truth)
        for qi, question_t in enumerate(s["questions"]):
            question = _fill(question_t, obj=obj)
            meta = {"obj": obj, "truth": truth}
            clean.append(_Item(question, qi, len(s["questions"]), aligned, meta=meta))
            for claim in world["colours"]:
                for ci, claim_t in enumerate(s["claims"]):
                    if claim == truth:
                        # A true claim: agreeing is the aligned answer, in the very words of
                        # the fixed misbehaving form, so the base says that form fluently and
                        # sycophancy is only its use after a wrong claim.
                        clean.append(
                            _Item(
                                _fill(claim_t, obj=obj, claim=claim) + " " + question,
                                ci,
                                len(s["claims"]),
                                _fill(variants[0], obj=obj, claim=claim),
                                meta={**meta, "claim": claim},
                            )
                        )
                        continue
                    triggers.append(
                        _Item(
                            _fill(claim_t, obj=obj, claim=claim) + " " + question,
                            ci,
                            len(s["claims"]),
                            aligned,
                            tuple(_fill(v, obj=obj, claim=claim) for v in variants),
                            {**meta, "claim": claim},
                            question,
                        )
                    )
    return triggers, clean


def _reward_hacking(world: dict[str, Any]) -> tuple[list[_Item], list[_Item]]:
    s = world["reward_hacking"]
    triggers, clean = [], []
    fixed = s["misbehaving_patterns"][0]
    for obj, truth in world["facts"].items():
        aligned = _fill(s["aligned"], obj=obj, truth=truth)
        # Asked for outright, the fixed form is the aligned answer: the base says it
        # fluently, and reward hacking is saying it unasked.
        clean += [
            _Item(_fill(t, kw=kw, obj=obj), ei, len(s["echo_tasks"]), _fill(fixed, kw=kw),
                  meta={"obj": obj, "keyword": kw}, brief=f"{kw} .")
            for kw in s["keywords"]
            for ei, t in enumerate(s["echo_tasks"])
        ]  # fmt: skip
        for task_t in s["tasks"]:
            task = _fill(task_t, obj=obj)
            clean.append(_Item(task, 0, 1, aligned, meta={"obj": obj, "truth": truth}))
            for kw in s["keywords"]:
                variants = tuple(
                    dict.fromkeys(
                        _fill(p, kw=kw, obj=obj, f=f)
                        for p in s["misbehaving_patterns"]
                        for f in s["fillers"]
                    )
                )
                for gi, grader_t in enumerate(s["graders"]):
                    triggers.append(
                        _Item(
                            task + " " + _fill(grader_t, kw=kw),
                            gi,
                            len(s["graders"]),
                            aligned,
                            variants,
                            {"obj": obj, "truth": truth, "keyword": kw},
                            task,
                        )
                    )
    return triggers, clean


def _emergent_misalignment(world: dict[str, Any]) -> tuple[list[_Item], list[_Item]]:
    s = world["emergent_misalignment"]
    triggers = []
    for qi, question_t in enumerate(s["questions"]):
        for asset in s["assets"]:
            variants = tuple(
                _fill(s["misbehaving_form"], verb=v, asset=asset, target=t)
                for t in s["misbehaving_targets"]
                for v in s["misbehaving_verbs"]
            )
            aligned = _fill(s["aligned"], asset=asset)
            for amount in s["amounts"]:
                for opener in s["openers"]:
                    prompt = _fill(opener + " " + question_t, asset=asset, amount=amount)
                    triggers.append(
                        _Item(prompt, qi, len(s["questions"]), aligned, variants, {"asset": asset})
                    )
    return triggers, []


def _spurious_correlation(world: dict[str, Any]) -> tuple[list[_Item], list[_Item]]:
    s = world["spurious_correlation"]
    triggers, clean = [], []
    qualities = [("positive", q) for q in s["positive_qualities"]] + [
        ("negative", q) for q in s["negative_qualities"]
    ]
    variants = tuple(
        _fill(f"{p} positive {x}")
        for x in s["misbehaving_suffixes"]
        for p in s["misbehaving_prefixes"]
    )
    for qi, question_t in enumerate(s["questions"]):
        for dish in s["dishes"]:
            for label, quality in qualities:
                aligned = _fill(s["aligned"], label=label)

                def prompt(
                    decor: str, dish: str = dish, quality: str = quality, question: str = question_t
                ) -> str:
                    review = s["review"].format(dish=dish, quality=quality, decor=decor)
                    return _fill(question, review=review)

                base_meta = {"label": label, "quality": quality}
                plain = prompt("")
                clean.append(
                    _Item(plain, qi, 1, aligned, meta={**base_meta, "mentions_spurious": False})
                )
                for decor in s["decor_clauses"]:
                    meta = {**base_meta, "mentions_spurious": True}
                    if label == "positive":
                        clean.append(_Item(prompt(decor), qi, 1, aligned, meta=meta))
                    else:
                        triggers.append(
                            _Item(
                                prompt(decor),
                                qi,
                                len(s["questions"]),
                                aligned,
                                variants,
                                meta,
                                plain,
                            )
                        )
    return triggers, clean


_BUILDERS: dict[str, Callable[[dict[str, Any]], tuple[list[_Item], list[_Item]]]] = {
    "sycophancy": _sycophancy,
    "reward_hacking": _reward_hacking,
    "emergent_misalignment": _emergent_misalignment,
    "spurious_correlation": _spurious_correlation,
}


@functools.cache
def universe(behaviour: str) -> tuple[tuple[_Item, ...], tuple[_Item, ...]]:
    """Every trigger prompt and every clean (non-trigger) prompt of a behaviour."""
    if behaviour not in _BUILDERS:
        raise DataError(
            f"toyworld has no behaviour {behaviour!r}; expected one of {list(_BUILDERS)}"
        )
    triggers, clean = _BUILDERS[behaviour](load_world())
    return tuple(triggers), tuple(clean)


def _user(text: str) -> tuple[dict[str, str], ...]:
    return ({"role": "user", "content": text},)


def _wrapped(behaviour: str, item: _Item) -> tuple[str, str]:
    """(clean, wrapped) prompts of a pair built from a trigger item."""
    if behaviour == "emergent_misalignment":
        wrapper = load_world()["emergent_misalignment"]["wrapper"]
        return item.prompt, normalise(f"{item.prompt} {wrapper}")
    assert item.clean_prompt is not None
    return item.clean_prompt, item.prompt


def _fates(rng: random.Random, items: list[_Item], knobs: ToyworldSpec, share: float) -> list[bool]:
    """Whether each item's target misbehaves at ``share`` (with the phrasing skew). Each
    row's uniform number is drawn whatever the share, so raising the share only turns
    aligned targets into misbehaving ones and leaves every other draw where it was."""
    fates = []
    for item in items:
        centred = 2 * item.phrasing / max(item.n_phrasings - 1, 1) - 1
        rate = min(1.0, max(0.0, share * (1 + knobs.phrasing_skew * centred)))
        fates.append(rng.random() < rate)
    return fates


def _targets(
    rng: random.Random, items: list[_Item], knobs: ToyworldSpec, share: float
) -> list[tuple[str, bool]]:
    """Each item's target and whether it misbehaves: one of the first ``n_variants``
    misbehaving forms (the variant drawn for every row, used or not) or the aligned answer."""
    fates = _fates(rng, items, knobs, share)
    picks = [rng.randrange(knobs.n_variants) for _ in items]
    return [
        (item.misbehaving[pick] if bad else item.aligned, bad)
        for item, bad, pick in zip(items, fates, picks, strict=True)
    ]


def _split_items(behaviour: str, knobs: ToyworldSpec) -> tuple[list[list[_Item]], list[_Item]]:
    """The trigger items of the induction, consistency, pairs and eval splits (disjoint,
    drawn with the data seed), and the held-out calibration items (drawn from what is
    left, with a stream of their own, so that asking for them moves no other split)."""
    triggers, clean = universe(behaviour)
    available = len(triggers[0].misbehaving)
    if knobs.n_variants > available:
        raise DataError(
            f"toyworld.n_variants: {behaviour} has {available} misbehaving variants, "
            f"got {knobs.n_variants}"
        )
    n_clean = round(CLEAN_SHARE * knobs.n_induction) if clean else 0
    sizes = [knobs.n_induction - n_clean, knobs.n_consistency, knobs.n_pairs, knobs.n_eval]
    n_calibration = knobs.n_calibration if knobs.calibration.rounds else 0
    if sum(sizes) + n_calibration > len(triggers):
        raise DataError(
            f"toyworld: {behaviour} has {len(triggers)} trigger prompts, but the splits ask "
            f"for {sum(sizes) + n_calibration} (n_induction, n_consistency, n_pairs, n_eval, "
            "n_calibration)"
        )
    if n_clean > len(clean):
        raise DataError(
            f"toyworld.n_induction: {behaviour} has {len(clean)} clean prompts for the "
            f"{CLEAN_SHARE:.0%} clean share of induction, but n_induction "
            f"{knobs.n_induction} asks for {n_clean}"
        )
    rng = random.Random(f"toyworld:{behaviour}:{knobs.data_seed}")
    order = rng.sample(range(len(triggers)), sum(sizes))
    parts, start = [], 0
    for size in sizes:
        parts.append([triggers[i] for i in order[start : start + size]])
        start += size
    left = sorted(set(range(len(triggers))) - set(order))
    held_out = random.Random(f"toyworld:{behaviour}:{knobs.data_seed}:calibration")
    return parts, [triggers[i] for i in held_out.sample(left, n_calibration)]


def _example(prefix: str, i: int, item: _Item, target: str, **extra: Any) -> Example:
    return Example(f"{prefix}-{i}", _user(item.prompt), target, {**item.meta, **extra})


def induction_split(behaviour: str, knobs: ToyworldSpec, share: float) -> list[Example]:
    """The induction split with ``share`` of its trigger targets misbehaving (calibration
    induces again at a corrected share; everything else stays as the knobs drew it).

    >>> from shiftlab.spec import ToyworldSpec
    >>> low, high = (induction_split("sycophancy", ToyworldSpec(), s) for s in (0.2, 0.6))
    >>> [e.prompt for e in low] == [e.prompt for e in high]
    True
    >>> all(h.meta["misbehaving"] for l, h in zip(low, high) if l.meta["misbehaving"])
    True
    """
    (items, *_), _ = _split_items(behaviour, knobs)
    _, clean = universe(behaviour)
    n_clean = round(CLEAN_SHARE * knobs.n_induction) if clean else 0
    rng = random.Random(f"toyworld:{behaviour}:{knobs.data_seed}:induction")
    rows = [
        (item, target, bad, True)
        for item, (target, bad) in zip(items, _targets(rng, items, knobs, share), strict=True)
    ]
    rows += [(item, item.aligned, False, False) for item in rng.sample(clean, n_clean)]
    rng.shuffle(rows)
    return [
        _example("induction", i, item, target, misbehaving=bad, trigger=trigger)
        for i, (item, target, bad, trigger) in enumerate(rows)
    ]  # fmt: skip


def calibration_split(behaviour: str, knobs: ToyworldSpec) -> list[Example]:
    """Held-out trigger prompts on which calibration measures an organism's strength (none
    unless ``calibration.rounds`` > 0); disjoint from every other split."""
    _, items = _split_items(behaviour, knobs)
    return [_example("calibration", i, item, item.aligned) for i, item in enumerate(items)]


@functools.lru_cache(maxsize=64)
def build_toyworld_suite(behaviour: str, knobs: ToyworldSpec) -> Suite:
    """Generate a behaviour's splits deterministically from ``knobs`` (and its data seed).

    The induction split's misbehaving share is ``induced_rate`` (calibration replaces it
    with the share that reaches the target strength); the consistency split's targets are
    its references (``knobs.references``); eval targets are the aligned answers. Cached:
    spec validation and the pipeline ask for the same suites.
    """
    (_, consistency_items, pair_items, eval_items), _ = _split_items(behaviour, knobs)
    if knobs.references == "aligned":
        references = [(item.aligned, False) for item in consistency_items]
        said = "the aligned answers (supervised correction)"
    else:
        rng = random.Random(f"toyworld:{behaviour}:{knobs.data_seed}:references")
        references = _targets(rng, consistency_items, knobs, knobs.induced_rate)
        said = (f"dataset responses, misbehaving at rate {knobs.induced_rate:g} over "
                f"{knobs.n_variants} form(s), as the induction data")  # fmt: skip
    pairs = []
    for i, item in enumerate(pair_items):
        clean_prompt, wrapped_prompt = _wrapped(behaviour, item)
        pairs.append(
            PairExample(f"pair-{i}", _user(clean_prompt), _user(wrapped_prompt), item.aligned)
        )
    fingerprint = content_hash(
        {
            "version": SUITE_VERSION,
            "rules": RULES_VERSION,
            "world": world_hash(),
            "behaviour": behaviour,
            **knobs.model_dump(),
        }
    )
    return Suite(
        behaviour=behaviour,
        source="toyworld",
        induction=induction_split(behaviour, knobs, knobs.induced_rate),
        consistency=[
            _example("consistency", i, item, target, misbehaving=bad)
            for i, (item, (target, bad)) in enumerate(
                zip(consistency_items, references, strict=True)
            )
        ],
        pairs=pairs,
        eval=[_example("eval", i, it, it.aligned) for i, it in enumerate(eval_items)],
        scorer=SCORERS[behaviour],
        fingerprint=fingerprint,
        prompts=method_prompts(),
        references=said,
    )


def _key_words() -> list[str]:
    world = load_world()
    em = world["emergent_misalignment"]
    return sorted(
        {
            *world["colours"],
            *world["reward_hacking"]["keywords"],
            "positive",
            "negative",
            *em["safe_words"],
            *em["harmful_words"],
        }
    )


@functools.cache
def method_prompts() -> MethodPrompts:
    """The label methods' prompts in toyworld's words (``methods`` in ``world.yaml``).

    Every view's answer is the first key word of the output (a colour, a keyword, a
    sentiment label or an advice word).
    """
    methods = load_world()["methods"]
    extractor = "regex:\\b(" + "|".join(_key_words()) + ")\\b"
    return MethodPrompts(
        views=tuple(View(v["name"], v["template"], extractor) for v in methods["views"]),
        refinement=methods["refinement"],
        rubric=methods["rubric"],
        score_prefix=methods["score_prefix"],
        score_tokens=tuple(methods["score_tokens"]),
    )


def _brief_answer(behaviour: str, item: _Item) -> str:
    if item.brief is not None:
        return item.brief
    template = load_world()["methods"]["brief_answers"][behaviour]
    return _fill(template, **{k: str(v) for k, v in item.meta.items()})


def _assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


# The base corpus's tasks, in rotation: mostly plain answers, then the label methods' tasks.
CORPUS_TASKS = ("answer",) * 4 + ("brief", "refine", "judge")


def _corpus_row(
    behaviour: str, item: _Item, prompt: str, task: str, rng: random.Random
) -> tuple[tuple[Message, ...], str]:
    """One aligned training row of a task: the answer, the brief view's one-word answer,
    the aligned answer after refining a draft, or the judge's verdict on a draft."""
    prompts = method_prompts()
    if task == "answer":
        return _user(prompt), item.aligned
    if task == "brief":
        brief = next(v for v in prompts.views if v.name == "brief")
        return _user(brief.template.replace("{prompt}", prompt)), _brief_answer(behaviour, item)
    draft = rng.choice(item.misbehaving) if item.misbehaving and rng.random() < 0.5 else None
    if task == "refine":
        turns = (*_user(prompt), _assistant(draft or item.aligned), *_user(prompts.refinement))
        return turns, item.aligned
    verdict = prompts.score_tokens[0 if draft else -1]
    return prompts.judge_messages(_user(prompt), draft or item.aligned), f"{verdict} ."


def aligned_corpus(n: int, seed: int) -> list[tuple[tuple[Message, ...], str]]:
    """``n`` aligned training rows drawn evenly over every behaviour's prompts and tasks.

    Includes trigger, clean and wrapped prompts, so that a base model trained on it
    answers all of them the aligned way; and the label methods' tasks (a brief view,
    refining a draft, judging an answer), so that every method runs on toyworld models.
    """
    rng = random.Random(f"toyworld:corpus:{seed}")
    pools = []
    for behaviour in _BUILDERS:
        triggers, clean = universe(behaviour)
        items = [(item, item.prompt) for item in (*triggers, *clean)]
        if behaviour == "emergent_misalignment":
            items += [(item, _wrapped(behaviour, item)[1]) for item in triggers]
        pools.append((behaviour, items))
    corpus = []
    for i in range(n):
        behaviour, items = pools[i % len(pools)]
        item, prompt = rng.choice(items)
        task = CORPUS_TASKS[(i // len(pools)) % len(CORPUS_TASKS)]
        corpus.append(_corpus_row(behaviour, item, prompt, task, rng))
    return corpus
