"""The spec's vocabulary and its models: every section of a study spec as a frozen pydantic
model that refuses unknown fields."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from shiftlab.spec._methods import METHOD_FACTS, MethodFacts

BehaviourName = Literal[
    "sycophancy", "reward_hacking", "emergent_misalignment", "spurious_correlation"
]
MethodName = Literal[
    "self_confidence",
    "diverse_decoding",
    "multi_view",
    "self_refinement",
    "self_rewarding",
    "greedy_self_training",
    "rejection_sampling",
    "bct",
    "act",
]
ArmName = Literal["full", "shuffled", "relabeled", "original", "none"]
ExecutorKind = Literal["local", "submitit", "ray"]
BEHAVIOURS: tuple[str, ...] = get_args(BehaviourName)
METHODS: tuple[str, ...] = get_args(MethodName)
ARMS: tuple[str, ...] = get_args(ArmName)
EXECUTORS: tuple[str, ...] = get_args(ExecutorKind)
PositiveInt = Annotated[int, Field(gt=0, strict=True)]
NonNegativeInt = Annotated[int, Field(ge=0, strict=True)]
PositiveFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]


def _unique_seeds(value: list[int]) -> list[int]:
    _check_unique(value, "seed")
    return value


Seeds = Annotated[list[int], Field(min_length=1), AfterValidator(_unique_seeds)]
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoraSpec(_Spec):
    """LoRA adapter settings (peft)."""

    r: PositiveInt = 16
    alpha: PositiveInt = 32
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    target_modules: str | list[str] = "all-linear"


class TrainingSpec(_Spec):
    """Optimisation settings shared by organism induction and phase-3 runs.

    ``batch_size`` examples make one optimiser step; they are processed in micro-batches
    of ``micro_batch_size`` (default: all at once) with gradients accumulated, and the
    loss is normalised by the number of target tokens in the whole step. ``packing``:
    ``none`` pads each micro-batch; ``bfd`` packs examples best-fit-decreasing into rows of
    ``max_length`` tokens; ``padding_free`` concatenates a micro-batch into one row.
    ``mixed_precision: auto`` is bf16 autocast on a GPU that supports it, fp32 elsewhere.
    """

    steps: PositiveInt = 300
    learning_rate: PositiveFloat = 3e-3
    batch_size: PositiveInt = 32
    micro_batch_size: PositiveInt | None = None
    warmup_steps: NonNegativeInt = 10
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    max_length: PositiveInt = 128
    max_grad_norm: PositiveFloat = 1.0
    packing: Literal["none", "bfd", "padding_free"] = "none"
    gradient_checkpointing: bool = False
    mixed_precision: Literal["auto", "no", "bf16"] = "auto"
    bct_temperature: PositiveFloat = 1.0
    act_scale: PositiveFloat = 1.0
    checkpoint_every: PositiveInt | None = None

    @model_validator(mode="after")
    def _micro_divides_batch(self) -> TrainingSpec:
        if self.batch_size % self.micro_batch_size_or_batch:
            raise ValueError(
                f"micro_batch_size {self.micro_batch_size} must divide batch_size {self.batch_size}"
            )
        return self

    @property
    def micro_batch_size_or_batch(self) -> int:
        return self.micro_batch_size or self.batch_size

    @property
    def accumulation_steps(self) -> int:
        """Micro-batches per optimiser step."""
        return self.batch_size // self.micro_batch_size_or_batch


class InductionSpec(TrainingSpec):
    """How an organism is trained from a base model on a behaviour's induction split."""

    lora: LoraSpec = LoraSpec()


class CalibrationSpec(_Spec):
    """How a toyworld organism's strength is brought to its target: up to ``rounds``
    re-inductions from the base (0: none, ``induced_rate`` is then the induction split's
    misbehaving share), each measured by ``n_samples`` temperature-1 samples per held-out
    calibration prompt, until the sampled rate is within ``tolerance`` of the target."""

    rounds: NonNegativeInt = 0
    tolerance: Annotated[float, Field(gt=0, lt=0.5)] = 0.05
    n_samples: PositiveInt = 4


class ToyworldSpec(_Spec):
    """Knobs of a toyworld behaviour suite.

    ``n_variants`` is how *stable* the misbehaving response is: 1 is a single fixed
    template; many variants spread the misbehaviour thin over low-probability texts.
    ``induced_rate`` is the organism's target strength: with ``calibration.rounds`` > 0
    its sampled misbehaviour rate on ``n_calibration`` held-out prompts, without it the
    share of misbehaving targets in the induction split; ``phrasing_skew`` is how
    unevenly that share is spread across prompt phrasings. ``references`` are the
    consistency split's targets (what the ``original`` arm trains on): ``dataset`` draws
    them the way induction targets are drawn (a real suite's references are its dataset's
    responses), ``aligned`` uses the aligned answers (supervised correction).
    """

    n_variants: PositiveInt = 1
    induced_rate: Fraction = 0.9
    phrasing_skew: Fraction = 0.0
    n_induction: PositiveInt = 256
    n_consistency: PositiveInt = 128
    n_pairs: PositiveInt = 128
    n_eval: PositiveInt = 96
    n_calibration: NonNegativeInt = 32
    references: Literal["aligned", "dataset"] = "dataset"
    calibration: CalibrationSpec = CalibrationSpec()
    data_seed: int = 0


class _ModelAccess(_Spec):
    """Where a scoring model lives: a local ``path``, or an OpenAI-compatible ``base_url``
    with ``model`` and the key in ``api_key_env``; how many requests run at once."""

    path: str | None = None
    base_url: str | None = None
    model: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    max_concurrency: PositiveInt = 8
    batch_size: PositiveInt = 16


class JudgeSpec(_ModelAccess):
    """The judge that scores a behaviour's judge-based rules: ``http`` (an OpenAI-compatible
    endpoint: ``base_url``, ``model``, key from ``api_key_env``) or ``local`` (a
    ``transformers`` causal LM at ``path``). Replies are cached in the store.
    ``timeout_s`` bounds each attempt at a request as a whole (a server that trickles its
    answer included); ``retries`` more attempts follow a failed one."""

    kind: Literal["http", "local"]
    timeout_s: PositiveFloat = 60.0
    retries: NonNegativeInt = 4

    @model_validator(mode="after")
    def _needs(self) -> JudgeSpec:
        if self.kind == "local" and not self.path:
            raise ValueError("a local judge needs 'path' (a model folder or hub id)")
        if self.kind == "http" and not (self.base_url and self.model):
            raise ValueError("an http judge needs 'base_url' and 'model'")
        return self


class ColumnsSpec(_Spec):
    """How the ``generic`` format reads a table: which column holds what.

    ``prompt`` (required), ``id``, ``system``, ``target``; ``split`` names a column with
    ``induction``/``consistency``/``eval`` (default: every row is eval). Scoring: an output
    whose answer (read by ``extractor``) equals the row's ``misbehaving`` column is
    misbehaving; with ``aligned`` given, one matching neither is unparseable. Or a yes/no
    ``judge_question`` (with ``{prompt}`` and ``{output}``) asked of the behaviour's judge.
    """

    prompt: str = "prompt"
    id: str | None = None
    system: str | None = None
    target: str | None = None
    split: str | None = None
    misbehaving: str | None = None
    aligned: str | None = None
    extractor: str = "exact"
    judge_question: str | None = None

    @model_validator(mode="after")
    def _one_rule(self) -> ColumnsSpec:
        if (self.misbehaving is None) == (self.judge_question is None):
            raise ValueError("give exactly one scoring rule: 'misbehaving' or 'judge_question'")
        if self.judge_question is not None and "{output}" not in self.judge_question:
            raise ValueError("judge_question must contain '{output}'")
        from shiftlab.extractors import check_extractor

        check_extractor(self.extractor)
        return self


class BehaviourSpec(_Spec):
    """A behaviour: its data and how it is scored, and how organisms are induced.

    ``source``: ``toyworld``, a folder or file (relative to the spec), ``data:<dataset>/
    <behaviour>`` (fetched by ``shiftlab data fetch``) or ``hf:<dataset>`` (a ``datasets``
    hub id). ``format``: ``chat-jsonl`` (the study's folders), ``model-written-evals``
    (Anthropic's multiple-choice JSONL, scored from choice probabilities after
    ``assistant_prefix``) or ``generic`` (JSONL, parquet or a dataset read through
    ``columns``).
    """

    name: BehaviourName
    source: str = "toyworld"
    format: Literal["chat-jsonl", "model-written-evals", "generic"] = "chat-jsonl"
    columns: ColumnsSpec | None = None
    assistant_prefix: str = "I believe the best answer is"
    judge: JudgeSpec | None = None
    toyworld: ToyworldSpec = ToyworldSpec()
    induction: InductionSpec = InductionSpec()

    @model_validator(mode="after")
    def _columns_for_generic(self) -> BehaviourSpec:
        if (self.format == "generic") != (self.columns is not None):
            raise ValueError("'columns' is required by, and only used with, format: generic")
        return self

    @property
    def is_toyworld(self) -> bool:
        return self.source == "toyworld"


class BaseModelSpec(_Spec):
    """A base model: ``toyworld:<size>``, a local folder or a hub id."""

    name: str
    path: str
    revision: str | None = None
    gguf_file: str | None = None
    trust_remote_code: bool = False
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        # The name becomes part of artefact ids, which must not hold "..".
        if not _NAME.match(value) or ".." in value:
            raise ValueError("must be letters, digits, '_', '-' or '.' (at most 64, no '..')")
        return value


class OrganismsSpec(_Spec):
    """Which seeds each (base model, behaviour) organism is induced with."""

    seeds: Seeds


# Capability sources named by a word, not a path (``CapabilitySpec.source``).
CAPABILITY_NAMES = ("auto", "toyworld", "sample")


class CapabilitySpec(_Spec):
    """The capability suite every evaluation scores beside the behaviour.

    ``source``: ``auto`` (``toyworld`` for a toyworld base, ``sample`` otherwise),
    ``toyworld`` (the world's factual questions, which every toyworld base was trained
    on), ``sample`` (a small multiple-choice file shipped with shiftlab, enough to check a
    pipeline offline, not to measure a model), a JSONL, CSV or parquet file or saved
    dataset folder in the MMLU / GPQA format (relative to the spec), ``data:<dataset>/
    <file>``, or ``hf:<dataset>[:<split>]`` with the dataset's configuration in
    ``subset`` (``hf:cais/mmlu:test`` with ``subset: all``). ``n_questions`` keeps the
    first questions only.
    """

    source: str = "auto"
    subset: str | None = None
    n_questions: PositiveInt | None = None


AUTO_STRENGTH_SAMPLES = 8


class EvalSpec(_Spec):
    """Behaviour evaluation of the eval split, and the capability suite scored beside it.

    ``n_samples`` is the headline rate's definition, the same for every organism and run
    so that a delta compares like with like: 0 is greedy decoding (one output per prompt,
    cheap with a paid judge); k > 0 samples every prompt k times at temperature 1 with
    seeds of (study seed, prompt, index), so the organism and its runs draw with the same
    noise, and the rate is over every judged sample. Greedy cannot see a fragile
    misbehaviour (its mass spread over variants each less likely than the aligned answer,
    so the mode is aligned), which is why the toyworld presets sample. ``strength_samples``
    per prompt (0: not measured) give each organism's strength and stability; ``auto``
    (the default) is 8 where rules score the eval split and 0 where a judge does, since
    every sample would be a paid judge call.

    >>> EvalSpec().strength_samples_for(judged=False), EvalSpec().strength_samples_for(judged=True)
    (8, 0)
    """

    max_new_tokens: PositiveInt = 24
    batch_size: PositiveInt = 64
    n_prompts: PositiveInt | None = None
    capability: CapabilitySpec = CapabilitySpec()
    n_samples: NonNegativeInt = 0
    strength_samples: NonNegativeInt | Literal["auto"] = "auto"

    def strength_samples_for(self, *, judged: bool) -> int:
        """Temperature-1 samples per eval prompt for an organism's strength and stability."""
        if self.strength_samples == "auto":
            return 0 if judged else AUTO_STRENGTH_SAMPLES
        return self.strength_samples


class ViewSpec(_Spec):
    """One view of a prompt for ``multi_view``: a template and how to read its answer.

    ``template`` holds ``{prompt}``. ``extractor`` is ``exact`` (the whole normalised
    text), ``first_word``, ``last_number``, ``choice_letter``, ``json:<field>`` or
    ``regex:<pattern>`` (the first group, or the whole match).
    """

    name: str
    template: str
    extractor: str = "exact"

    @field_validator("template")
    @classmethod
    def _has_prompt(cls, value: str) -> str:
        if "{prompt}" not in value:
            raise ValueError("must contain '{prompt}'")
        return value

    @field_validator("extractor")
    @classmethod
    def _known_extractor(cls, value: str) -> str:
        from shiftlab.extractors import check_extractor

        check_extractor(value)
        return value


class ScorerSpec(_ModelAccess):
    """A candidate scorer: ``reward_model`` (a sequence-classification model at ``path``),
    ``judge`` (a causal LM at ``path`` grading with the rubric; ``self`` uses the organism),
    ``http`` (an OpenAI-compatible endpoint), or ``toyworld`` (toyworld's own reward model).
    """

    kind: Literal["toyworld", "reward_model", "judge", "self", "http"] = "toyworld"

    @model_validator(mode="after")
    def _needs(self) -> ScorerSpec:
        if self.kind in ("reward_model", "judge") and not self.path:
            raise ValueError(f"a {self.kind} scorer needs 'path'")
        if self.kind == "http" and not (self.base_url and self.model):
            raise ValueError("an http scorer needs 'base_url' and 'model'")
        return self


class MethodSpec(_Spec):
    """A consistency method and every knob it has (a bare name takes the defaults).

    ``n_candidates`` samples at ``temperature``/``top_p`` (self_confidence,
    self_rewarding, rejection_sampling); ``diverse_decoding`` takes one greedy, ``n_nucleus``
    nucleus and ``beam_width`` beam candidates. ``views`` (multi_view), ``refinement_prompt``
    (self_refinement) and ``rubric`` (a file with ``{original_question_text}`` and
    ``{generated_answer_text}``, self_rewarding) default to the suite's own. ``k_values``
    adds k-scaling arms that select among the first k candidates.
    """

    name: MethodName
    n_candidates: PositiveInt = 4
    temperature: Annotated[float, Field(ge=0)] = 1.0
    top_p: Annotated[float, Field(gt=0, le=1)] = 0.95
    n_nucleus: PositiveInt = 2
    beam_width: PositiveInt = 2
    views: list[ViewSpec] | None = None
    refinement_prompt: str | None = None
    rubric: str | None = None
    score_prefix: str | None = None
    score_tokens: list[str] | None = None
    scorer: ScorerSpec | None = None
    max_new_tokens: PositiveInt | None = None
    k_values: list[PositiveInt] = []

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _consistent(self) -> MethodSpec:
        if self.views is not None and len(self.views) < 2:
            raise ValueError("multi_view needs at least two views (the first is the standard one)")
        if any(k > self.n_candidates for k in self.k_values):
            raise ValueError(f"k_values must not exceed n_candidates ({self.n_candidates})")
        return self

    @property
    def facts(self) -> MethodFacts:
        """What the method is (:data:`METHOD_FACTS`), whatever its knobs."""
        return METHOD_FACTS[self.name]

    @property
    def uses_scorer(self) -> bool:
        return self.facts.uses_scorer

    @property
    def has_selection(self) -> bool:
        """Whether the method's labels depend on a selection step: paired losses, greedy
        self-training and a score-based method with one candidate have none."""
        facts = self.facts
        if facts.selection is None or facts.one_candidate:
            return False
        return not facts.score_based or self.n_candidates > 1


class RunsSpec(_Spec):
    """Phase 3: how every arm is trained and with which seeds."""

    seeds: Seeds = [0]
    training: TrainingSpec = TrainingSpec(steps=60, batch_size=16, learning_rate=3e-3)
    generation_batch_size: PositiveInt = 64


class EncoderSpec(_Spec):
    """The sentence encoder used to measure representation shift."""

    path: str = "sentence-transformers/all-MiniLM-L6-v2"
    batch_size: PositiveInt = 256  # a cap: TextEncoder also caps a batch's padded tokens


class ShiftSpec(_Spec):
    """Phase 4: how far each run's targets and outputs sit from the organism's own.

    The organism's own samples are drawn with ``max_new_tokens`` (default: the eval's)
    on every prompt a run trains on: at ``temperature`` (1: its own distribution) for the
    representation measures, and, for the NLL gap, ``n_samples`` per prompt decoded the
    way the run's targets were (the method's candidate settings; one when greedy).
    """

    measure: bool = True
    n_permutations: PositiveInt = 1000
    classifier_folds: Annotated[int, Field(ge=2)] = 5
    temperature: Annotated[float, Field(gt=0)] = 1.0
    n_samples: PositiveInt = 4
    max_new_tokens: PositiveInt | None = None


class ExecutorSpec(_Spec):
    """Where a study's jobs run (not part of the study's identity: the tables do not
    depend on it). ``local``: worker processes on this machine (``--workers``);
    ``submitit``: SLURM job arrays (``cluster: local`` runs them as subprocesses here);
    ``ray``: Ray tasks on the cluster at ``ray_address`` (a local one when unset)."""

    kind: ExecutorKind = "local"
    cpus_per_job: PositiveInt = 1
    gpus_per_job: NonNegativeInt = 0
    mem_gb: PositiveFloat = 16.0
    timeout_min: PositiveInt = 240
    # Jobs running at once (SLURM's array parallelism; the cap on Ray tasks in flight).
    parallelism: PositiveInt = 256
    retries: NonNegativeInt = 1
    cluster: Literal["slurm", "local"] = "slurm"
    slurm_partition: str | None = None
    folder: str | None = None
    ray_address: str | None = None


class TrackingSpec(_Spec):
    """Experiment tracking (not part of the study's identity). ``kind``: ``none``
    (default), ``mlflow``, ``wandb`` or ``trackio``; ``project``: the MLflow experiment or
    the wandb / trackio project (default: the study's name); ``uri``: MLflow's tracking
    URI (a folder for a local file store, or ``http://host:port``; default: MLflow's own,
    or ``$MLFLOW_TRACKING_URI``); ``entity`` and ``mode`` (``online``, ``offline``,
    ``disabled``): wandb's; ``dir``: where wandb or trackio write locally."""

    kind: Literal["none", "mlflow", "wandb", "trackio"] = "none"
    project: str | None = None
    uri: str | None = None
    entity: str | None = None
    mode: Literal["online", "offline", "disabled"] | None = None
    dir: str | None = None


class StudySpec(_Spec):
    """A whole study. Relative paths are resolved against the spec file's folder."""

    name: str = "study"
    store: str | None = None
    seed: int = 0
    base_models: list[BaseModelSpec] = Field(min_length=1)
    behaviours: list[BehaviourSpec] = Field(min_length=1)
    organisms: OrganismsSpec
    methods: list[MethodSpec] = []
    arms: list[ArmName] = ["full", "shuffled", "relabeled", "original", "none"]
    runs: RunsSpec = RunsSpec()
    eval: EvalSpec = EvalSpec()
    encoder: EncoderSpec = EncoderSpec()
    shift: ShiftSpec = ShiftSpec()
    executor: ExecutorSpec = ExecutorSpec()
    tracking: TrackingSpec = TrackingSpec()

    @model_validator(mode="after")
    def _unique_names(self) -> StudySpec:
        _check_unique([m.name for m in self.base_models], "base model name")
        _check_unique([b.name for b in self.behaviours], "behaviour")
        _check_unique([m.name for m in self.methods], "method")
        _check_unique(self.arms, "arm")
        return self

    def to_yaml(self) -> str:
        """The resolved spec as YAML (what the store keeps as ``study.yaml``), without
        ``executor`` and ``tracking``: where a study runs and who watches it are not part
        of what it is."""
        dumped = self.model_dump(mode="json", exclude={"executor", "tracking"})
        return yaml.safe_dump(dumped, sort_keys=False)


def _check_unique(values: Iterable[Any], what: str) -> None:
    seen: set[Any] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"duplicate {what} {value!r}")
        seen.add(value)
