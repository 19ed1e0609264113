"""The study spec: one YAML file that says what a study trains, evaluates and compares.

>>> spec = StudySpec.model_validate({
...     "name": "mini",
...     "base_models": [{"name": "toy", "path": "toyworld:small"}],
...     "behaviours": [{"name": "sycophancy"}],
...     "organisms": {"seeds": [0]},
... })
>>> spec.behaviours[0].induction.steps
300
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from shiftlab.errors import SpecError

BEHAVIOURS = ("sycophancy", "reward_hacking", "emergent_misalignment", "spurious_correlation")
LABEL_METHODS = (
    "self_confidence",
    "diverse_decoding",
    "multi_view",
    "self_refinement",
    "self_rewarding",
    "greedy_self_training",
    "rejection_sampling",
)
PAIRED_METHODS = ("bct", "act")
METHODS = LABEL_METHODS + PAIRED_METHODS
ARMS = ("full", "shuffled", "relabeled", "original", "none")

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
PositiveInt = Annotated[int, Field(gt=0, strict=True)]
NonNegativeInt = Annotated[int, Field(ge=0, strict=True)]
PositiveFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoraSpec(_Spec):
    """LoRA adapter settings (peft)."""

    r: PositiveInt = 16
    alpha: PositiveInt = 32
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    target_modules: str | list[str] = "all-linear"


class InductionSpec(_Spec):
    """How an organism is trained from a base model on a behaviour's induction split."""

    steps: PositiveInt = 300
    learning_rate: PositiveFloat = 3e-3
    batch_size: PositiveInt = 32
    warmup_steps: NonNegativeInt = 10
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    max_length: PositiveInt = 128
    lora: LoraSpec = LoraSpec()


class ToyworldSpec(_Spec):
    """Knobs of a toyworld behaviour suite.

    ``n_variants`` is how *stable* the misbehaving response is: 1 is a single fixed
    template; many variants spread the misbehaviour thin over low-probability texts.
    ``induced_rate`` is the share of misbehaving targets in the induction split and
    ``phrasing_skew`` how unevenly that share is spread across prompt phrasings.
    """

    n_variants: PositiveInt = 1
    induced_rate: Fraction = 0.9
    phrasing_skew: Fraction = 0.0
    n_induction: PositiveInt = 256
    n_consistency: PositiveInt = 128
    n_pairs: PositiveInt = 128
    n_eval: PositiveInt = 96
    data_seed: int = 0


class BehaviourSpec(_Spec):
    """A behaviour: its data (``toyworld`` or a folder of chat-JSONL files) and induction."""

    name: BehaviourName
    source: str = "toyworld"
    format: Literal["chat-jsonl"] = "chat-jsonl"
    toyworld: ToyworldSpec = ToyworldSpec()
    induction: InductionSpec = InductionSpec()

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
        if not _NAME.match(value):
            raise ValueError("must be letters, digits, '_', '-' or '.' (at most 64)")
        return value


class OrganismsSpec(_Spec):
    """Which seeds each (base model, behaviour) organism is induced with."""

    seeds: list[int] = Field(min_length=1)

    @field_validator("seeds")
    @classmethod
    def _unique(cls, value: list[int]) -> list[int]:
        _check_unique(value, "seed")
        return value


class EvalSpec(_Spec):
    """Behaviour evaluation: greedy decoding of the eval split."""

    max_new_tokens: PositiveInt = 24
    batch_size: PositiveInt = 64
    n_prompts: PositiveInt | None = None


class EncoderSpec(_Spec):
    """The sentence encoder used to measure representation shift."""

    path: str = "sentence-transformers/all-MiniLM-L6-v2"


class StudySpec(_Spec):
    """A whole study. Relative paths are resolved against the spec file's folder."""

    name: str = "study"
    store: str | None = None
    seed: int = 0
    base_models: list[BaseModelSpec] = Field(min_length=1)
    behaviours: list[BehaviourSpec] = Field(min_length=1)
    organisms: OrganismsSpec
    methods: list[MethodName] = []
    arms: list[ArmName] = ["full", "shuffled", "relabeled", "original", "none"]
    eval: EvalSpec = EvalSpec()
    encoder: EncoderSpec = EncoderSpec()

    @model_validator(mode="after")
    def _unique_names(self) -> StudySpec:
        _check_unique([m.name for m in self.base_models], "base model name")
        _check_unique([b.name for b in self.behaviours], "behaviour")
        _check_unique(self.methods, "method")
        _check_unique(self.arms, "arm")
        return self

    def to_yaml(self) -> str:
        """The resolved spec as YAML (what the store keeps as ``study.yaml``)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _check_unique(values: Iterable[Any], what: str) -> None:
    seen: set[Any] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"duplicate {what} {value!r}")
        seen.add(value)


def _field_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "<spec>"


def _describe(error: Any, fields: dict[str, list[str]]) -> str:
    kind, ctx, got = error["type"], error.get("ctx", {}), error.get("input")
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        parent = re.sub(r"\[\d+\]", "", _field_path(error["loc"][:-1]))
        close = difflib.get_close_matches(str(error["loc"][-1]), fields.get(parent, []), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"is not a known field{hint}"
    if kind == "greater_than" and ctx.get("gt") == 0:
        noun = "integer" if isinstance(got, int) else "number"
        return f"must be a positive {noun}, got {got!r}"
    if kind in {"int_type", "int_parsing", "int_from_float"}:
        return f"must be an integer, got {got!r}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}, got {got!r}"
    message = str(error["msg"]).removeprefix("Value error, ")
    message = message[0].lower() + message[1:]
    return f"{message}, got {got!r}" if "got" not in message and got is not None else message


def _known_fields(model: type[BaseModel], prefix: str = "") -> dict[str, list[str]]:
    """Field names of each nested spec object, for 'did you mean' hints."""
    out = {prefix or "<spec>": list(model.model_fields)}
    for name, field in model.model_fields.items():
        annotation = field.annotation
        args = getattr(annotation, "__args__", ())
        for candidate in (annotation, *args):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                path = f"{prefix}.{name}" if prefix else name
                for key, value in _known_fields(candidate, path).items():
                    out[key] = value
    return out


def format_validation_error(error: ValidationError, origin: str) -> str:
    """One line naming each bad field, e.g. ``spec.yaml: behaviours[2].induction.steps: ...``."""
    fields = _known_fields(StudySpec)
    parts = [f"{_field_path(item['loc'])}: {_describe(item, fields)}" for item in error.errors()]
    return f"{origin}: " + "; ".join(parts)


def _resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Make relative data and store paths absolute against the spec's folder."""
    data = dict(data)
    if isinstance(data.get("store"), str) and not Path(data["store"]).expanduser().is_absolute():
        data["store"] = str((base / data["store"]).resolve())
    behaviours = data.get("behaviours")
    if isinstance(behaviours, list):
        resolved = []
        for entry in behaviours:
            if isinstance(entry, dict) and entry.get("source", "toyworld") != "toyworld":
                entry = {
                    **entry,
                    "source": str((base / str(entry["source"])).expanduser().resolve()),
                }
            resolved.append(entry)
        data["behaviours"] = resolved
    models = data.get("base_models")
    if isinstance(models, list):
        resolved = []
        for entry in models:
            path = entry.get("path") if isinstance(entry, dict) else None
            if isinstance(path, str) and path.startswith((".", "~")):
                entry = {**entry, "path": str((base / path).expanduser().resolve())}
            resolved.append(entry)
        data["base_models"] = resolved
    return data


def _check_sources(spec: StudySpec, origin: str) -> None:
    for i, behaviour in enumerate(spec.behaviours):
        if not behaviour.is_toyworld and not Path(behaviour.source).is_dir():
            raise SpecError(
                f"{origin}: behaviours[{i}].source: no such folder {behaviour.source!r} "
                "(expected 'toyworld' or a folder of suite files)"
            )
    for i, model in enumerate(spec.base_models):
        path = model.path
        if path.startswith("/") and not Path(path).exists():
            raise SpecError(f"{origin}: base_models[{i}].path: no such folder {path!r}")


def parse_spec(data: Any, origin: str = "<spec>", base: Path | None = None) -> StudySpec:
    """Validate an already-parsed spec mapping; errors name ``origin`` and the field path."""
    if not isinstance(data, dict):
        raise SpecError(f"{origin}: expected a mapping of spec fields, got {type(data).__name__}")
    data = _resolve_paths(data, base or Path.cwd())
    try:
        spec = StudySpec.model_validate(data)
    except ValidationError as error:
        raise SpecError(format_validation_error(error, origin)) from None
    _check_sources(spec, origin)
    return spec


def load_spec(path: str | Path) -> StudySpec:
    """Read and validate a YAML study spec.

    >>> load_spec("missing.yaml")
    Traceback (most recent call last):
    ...
    shiftlab.errors.SpecError: missing.yaml: no such spec file
    """
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: no such spec file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise SpecError(f"{where}: malformed YAML: {error.problem}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise SpecError(f"{path}: malformed YAML: {error}") from None
    return parse_spec(data, str(path), path.resolve().parent)
