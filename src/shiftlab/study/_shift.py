"""The shift stage (phase 4): how far each run's targets and outputs sit from its organism's own."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl
from tqdm.auto import tqdm

from shiftlab.chat import Message
from shiftlab.models import load_lora
from shiftlab.spec import (
    StudySpec,
)
from shiftlab.store import Store, build_manifest
from shiftlab.study._claims import ResidentBase, claim_by_organism, grouped
from shiftlab.study._jobs import OwnSamples, ShiftJob
from shiftlab.study._plan import (
    _own_distribution,
    prompt_key,
    sample_prompts,
    samples_config,
    training_items,
)
from shiftlab.study._tables import OUTPUT_SHIFT_COLUMNS, SHIFT_COLUMNS

# Texts embedded by (encoder, text), shared by every worker of a study.
EMBEDDING_CACHE = "cache/embeddings.sqlite"


def _organism_samples(
    spec: StudySpec, store: Store, jobs: list[ShiftJob], organism: Any, tokenizer: Any
) -> OwnSamples:
    """The organism's own samples on each prompt its runs train on, under each decoding
    they need (``shift.n_samples`` per prompt, one when greedy), built once per organism
    into ``samples/``."""
    from shiftlab.consistency import candidate_seed
    from shiftlab.generation import generate, score_continuations

    samples_id = jobs[0].samples_id
    if not store.is_finished("samples", samples_id):
        prompts = {prompt_key(m): m for job in jobs for m, _ in training_items(job.run)}
        wanted = sample_prompts(spec, [(job.run, job.decoding) for job in jobs])
        config = samples_config(spec, jobs[0].run.organism.artefact_id, wanted)
        cells = [
            (d, k, j)
            for d in sorted(wanted, key=lambda d: d.key)
            for k in sorted(wanted[d])
            for j in range(d.n_samples(spec.shift.n_samples))
        ]
        texts = []
        for decoding in sorted(wanted, key=lambda d: d.key):
            mine = [(k, j) for d, k, j in cells if d == decoding]
            texts += [g.text for g in generate(
                organism, tokenizer, [prompts[k] for k, _ in mine],
                max_new_tokens=config["max_new_tokens"], temperature=decoding.temperature,
                top_p=decoding.top_p, seeds=[candidate_seed(spec.seed, k, j) for k, j in mine],
                batch_size=spec.runs.generation_batch_size,
            )]  # fmt: skip
        scored = score_continuations(
            organism, tokenizer, [prompts[k] for _, k, _ in cells], texts,
            batch_size=spec.runs.generation_batch_size,
        )  # fmt: skip
        frame = pl.DataFrame(
            {
                "decoding": [d.key for d, _, _ in cells],
                "prompt_key": [k for _, k, _ in cells],
                "sample": [j for _, _, j in cells],
                "prompt": [prompts[k][-1]["content"] for _, k, _ in cells],
                "text": texts,
                "nll": [-sum(s) for s in scored],
                "n_tokens": [len(s) for s in scored],
            }
        )
        manifest = build_manifest(config, {"study": spec.seed})
        with store.artefact("samples", samples_id, manifest) as path:
            frame.write_parquet(path)
    frame = store.read_parquet("samples", samples_id).sort("decoding", "prompt_key", "sample")
    found: OwnSamples = {}
    for decoding, key, text, nll, n_tokens in frame.select(
        "decoding", "prompt_key", "text", "nll", "n_tokens"
    ).rows():
        found.setdefault((decoding, key), []).append((text, nll, n_tokens))
    return found


class ShiftMeter:
    """Measures runs of one organism while it is loaded; caches target NLLs across runs
    (arms share many targets) and embeddings across the study."""

    def __init__(
        self, spec: StudySpec, store: Store, organism: Any, tokenizer: Any, encoder: Any, scope: str
    ):
        from shiftlab.shift import EmbeddingCache

        self.spec, self.store, self.scope = spec, store, scope
        self.organism, self.tokenizer, self.encoder = organism, tokenizer, encoder
        self.cache = EmbeddingCache(store.root / EMBEDDING_CACHE)
        self.nll: dict[tuple[str, str], tuple[float, int]] = {}

    def score_targets(self, items: Sequence[tuple[tuple[Message, ...], str]]) -> None:
        """Score every (prompt, target) not scored yet, in one batched pass."""
        from shiftlab.generation import score_continuations

        missing = {(prompt_key(m), t): (m, t) for m, t in items}
        missing = {k: item for k, item in missing.items() if k not in self.nll}
        if missing:
            scored = score_continuations(
                self.organism,
                self.tokenizer,
                [m for m, _ in missing.values()],
                [t for _, t in missing.values()],
                batch_size=self.spec.runs.generation_batch_size,
            )
            self.nll.update({k: (-sum(s), len(s)) for k, s in zip(missing, scored, strict=True)})

    def _target_nll(self, items: list[tuple[tuple[Message, ...], str]]) -> list[tuple[float, int]]:
        self.score_targets(items)
        return [self.nll[(prompt_key(m), t)] for m, t in items]

    def _embed(self, texts: list[str]) -> Any:
        from shiftlab.shift import embed

        return embed(texts, self.encoder, self.cache, scope=self.scope)

    def embed_all(
        self, jobs: Sequence[ShiftJob], samples: OwnSamples, before: pl.DataFrame
    ) -> None:
        """Embed every text the organism's shift jobs compare, in one canonical pass
        (sorted, under the organism's scope): vectors then do not depend on which worker
        measured which run first, or on a resumed worker's batches."""
        texts = set(before["output"].to_list())
        for job in jobs:
            items = training_items(job.run)
            texts.update(t for _, t in items)
            texts.update(self._own(samples, m)[0] for m, _ in items)
            after = self.store.read_parquet("runs", job.run.run_id, "eval.parquet", ["output"])
            texts.update(after["output"].to_list())
        self._embed(sorted(texts))

    def _own(self, samples: OwnSamples, messages: Sequence[Message]) -> tuple[str, float, int]:
        """The organism's first sample from its own distribution on a prompt (what the
        representation measures compare with, one per prompt so they stay paired)."""
        return samples[(_own_distribution(self.spec).key, prompt_key(messages))][0]

    def measure(self, job: ShiftJob, samples: OwnSamples, before: pl.DataFrame) -> pl.DataFrame:
        from shiftlab.shift import NllGap, paired_shift

        settings = self.spec.shift
        items = training_items(job.run)
        own = [self._own(samples, m) for m, _ in items]
        matched = [samples[(job.decoding.key, prompt_key(m))] for m, _ in items]
        gap = NllGap.from_nll(
            self._target_nll(items), [[(nll, n) for _, nll, n in group] for group in matched]
        )
        targets = [t for _, t in items]
        shift = paired_shift(
            self._embed(targets),
            self._embed([text for text, _, _ in own]),
            n_permutations=settings.n_permutations,
            n_folds=settings.classifier_folds,
            seed=self.spec.seed,
        )
        after = self.store.read_parquet("runs", job.run.run_id, "eval.parquet")
        outputs = before.select("sample_id", "output").join(
            after.select("sample_id", "output"),
            on="sample_id",
            suffix="_after",
            maintain_order="left",  # row order seeds the permutations
        )
        moved = paired_shift(
            self._embed(outputs["output"].to_list()),
            self._embed(outputs["output_after"].to_list()),
            n_permutations=settings.n_permutations,
            classifier=False,
            seed=self.spec.seed,
        )
        return pl.DataFrame(
            [
                {
                    "run_id": job.run.run_id,
                    "n": shift.n,
                    "decoding": job.decoding.key,
                    "target_nll_per_token": gap.target_nll,
                    "sample_nll_per_token": gap.sample_nll,
                    "shift_nll_gap": gap.estimate,
                    "shift_nll_gap_ci_low": gap.ci_low,
                    "shift_nll_gap_ci_high": gap.ci_high,
                    "shift_mmd": shift.mmd,
                    "shift_mmd_p": shift.mmd_p,
                    "shift_c2st_auc": shift.c2st_auc,
                    "shift_energy": shift.energy,
                    "most_shifted_targets": [targets[i] for i in shift.most_shifted],
                    "output_n": moved.n,
                    "output_shift_mmd": moved.mmd,
                    "output_shift_mmd_p": moved.mmd_p,
                    "output_shift_energy": moved.energy,
                }
            ],
            schema_overrides={
                **{c: pl.Float64 for c in (*SHIFT_COLUMNS, *OUTPUT_SHIFT_COLUMNS)},
                "n": pl.Int64,
                "output_n": pl.Int64,
                # Empty when the run is too small for the probe; typed so frames concatenate.
                "most_shifted_targets": pl.List(pl.String),
            },
        )


def build_shift(
    spec: StudySpec,
    store: Store,
    jobs: list[ShiftJob],
    progress: bool,
    resident: ResidentBase | None = None,
) -> None:
    pending = [j for j in jobs if not store.is_finished("shift", j.artefact_id)]
    bar = tqdm(total=len(pending), desc="shift", unit="run", disable=not progress or not pending)
    resident = resident or ResidentBase()
    encoders: list[Any] = []  # loaded on first use, then kept

    every_job = grouped(jobs, lambda j: j.run.organism.artefact_id)

    def build(organism_id: str, shift_jobs: list[ShiftJob]) -> None:
        from shiftlab.shift import TextEncoder

        # The organism's whole set, not just what is left: a resumed organism must sample
        # and embed exactly what an uninterrupted one does.
        shift_jobs = every_job[organism_id]
        if not encoders:
            encoders.append(TextEncoder(spec.encoder.path, batch_size=spec.encoder.batch_size))
        model, tokenizer = resident.get(shift_jobs[0].run.organism.base)
        organism = load_lora(model, str(store.verified("organisms", organism_id, "adapter")))
        try:
            samples = _organism_samples(spec, store, shift_jobs, organism, tokenizer)
            before = store.read_parquet("organisms", organism_id, "eval.parquet")
            meter = ShiftMeter(spec, store, organism, tokenizer, encoders[0], organism_id)
            meter.embed_all(shift_jobs, samples, before)
            todo = [j for j in shift_jobs if not store.is_finished("shift", j.artefact_id)]
            # Arms share many targets: score the organism's distinct ones in one pass (all
            # of them, so the batches, and the last bits of each score, never depend on
            # what an interrupted worker finished).
            meter.score_targets([item for j in shift_jobs for item in training_items(j.run)])
            for job in todo:
                frame = meter.measure(job, samples, before)
                manifest = build_manifest(job.config, {"study": spec.seed})
                with store.artefact("shift", job.artefact_id, manifest) as path:
                    frame.write_parquet(path)
                bar.update()
        finally:
            organism.unload()

    claim_by_organism(
        store, "shift", pending, lambda j: j.run.organism, lambda j: j.artefact_id, build
    )
    bar.close()
