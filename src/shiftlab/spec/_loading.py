"""Reading a spec: YAML, paths resolved against the spec's folder, errors that name the
field, and checks of what the spec points at."""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ValidationError,
)

from shiftlab.errors import SpecError
from shiftlab.spec._models import CAPABILITY_NAMES, StudySpec


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
        noun = "integer" if _expects_int(error["loc"]) else "number"
        return f"must be a positive {noun}, got {got!r}"
    if kind in {"int_type", "int_parsing", "int_from_float"}:
        return f"must be an integer, got {got!r}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}, got {got!r}"
    message = str(error["msg"]).removeprefix("Value error, ")
    message = message[0].lower() + message[1:]
    return f"{message}, got {got!r}" if "got" not in message and got is not None else message


def _annotation_at(loc: tuple[int | str, ...]) -> Any:
    """The type annotation of the spec field at ``loc`` (list indices step into items)."""
    annotation: Any = StudySpec
    for part in loc:
        while get_origin(annotation) is Annotated or _is_optional(annotation):
            annotation = get_args(annotation)[0]
        if isinstance(part, int):
            annotation = get_args(annotation)[0] if get_args(annotation) else Any
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(part)
            annotation = field.annotation if field is not None else Any
    return annotation


def _is_optional(annotation: Any) -> bool:
    args = get_args(annotation)
    return len(args) == 2 and type(None) in args and get_origin(annotation) is not Annotated


def _expects_int(loc: tuple[int | str, ...]) -> bool:
    annotation = _annotation_at(loc)
    while get_origin(annotation) is Annotated or _is_optional(annotation):
        annotation = get_args(annotation)[0]
    return annotation is int


def _clean_loc(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """Drop pydantic's union-member tags (``str``, ``list[str]``, ...) from an error location."""
    return tuple(p for p in loc if isinstance(p, int) or ("[" not in p and p not in _TYPE_TAGS))


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}


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
    parts: list[str] = []
    for item in error.errors():
        item = {**item, "loc": _clean_loc(tuple(item["loc"]))}
        line = f"{_field_path(item['loc'])}: {_describe(item, fields)}"
        if line not in parts:
            parts.append(line)
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
            source = entry.get("source", "toyworld") if isinstance(entry, dict) else "toyworld"
            if _is_path(str(source), ("toyworld",)):
                entry = {
                    **entry,
                    "source": str((base / str(entry["source"])).expanduser().resolve()),
                }
            judge = entry.get("judge") if isinstance(entry, dict) else None
            if isinstance(judge, dict):
                entry = {**entry, "judge": _with_local_path(judge, base)}
            resolved.append(entry)
        data["behaviours"] = resolved
    methods = data.get("methods")
    if isinstance(methods, list):
        data["methods"] = [_resolve_method_paths(e, base) for e in methods]
    tracking = data.get("tracking")
    if isinstance(tracking, dict):
        data["tracking"] = {
            **tracking,
            **{key: str((base / str(tracking[key])).expanduser().resolve())
               for key in ("uri", "dir")
               if isinstance(tracking.get(key), str) and ":" not in str(tracking[key])},
        }  # fmt: skip
    models = data.get("base_models")
    if isinstance(models, list):
        data["base_models"] = [_with_local_path(e, base) for e in models]
    if isinstance(data.get("encoder"), dict):
        data["encoder"] = _with_local_path(data["encoder"], base)
    evaluation = data.get("eval")
    capability = evaluation.get("capability") if isinstance(evaluation, dict) else None
    if isinstance(evaluation, dict) and isinstance(capability, dict):
        source = capability.get("source")
        if isinstance(source, str) and _is_path(source, CAPABILITY_NAMES):
            capability = {**capability, "source": str((base / source).expanduser().resolve())}
            data["eval"] = {**evaluation, "capability": capability}
    return data


def _is_path(source: str, names: tuple[str, ...]) -> bool:
    """Whether a data ``source`` is a path, not one of ``names`` or a ``data:``/``hf:`` id."""
    return source not in names and not source.startswith(("data:", "hf:"))


def _with_local_path(entry: Any, base: Path) -> Any:
    """``entry`` with its ``path`` made absolute when it names a local folder (a path that
    starts with ``.`` or ``~``, or exists relative to ``base``); hub ids stay as they are."""
    path = entry.get("path") if isinstance(entry, dict) else None
    if not isinstance(path, str) or path.startswith("toyworld:"):
        return entry
    local = (base / path).expanduser()
    if path.startswith((".", "~")) or local.exists():
        return {**entry, "path": str(local.resolve())}
    return entry


def _resolve_method_paths(entry: Any, base: Path) -> Any:
    if not isinstance(entry, dict):
        return entry
    entry = dict(entry)
    if isinstance(entry.get("rubric"), str):
        entry["rubric"] = str((base / entry["rubric"]).expanduser().resolve())
    if isinstance(entry.get("scorer"), dict):
        entry["scorer"] = _with_local_path(entry["scorer"], base)
    return entry


def _check_sources(spec: StudySpec, origin: str) -> None:
    # A generated suite's knobs (toyworld's) are checked when the suite is built.
    for i, behaviour in enumerate(spec.behaviours):
        if _is_path(behaviour.source, ("toyworld",)) and not Path(behaviour.source).exists():
            raise SpecError(
                f"{origin}: behaviours[{i}].source: no such file or folder {behaviour.source!r} "
                "(expected 'toyworld', a suite folder or file, data:<dataset>/<behaviour> or "
                "hf:<dataset>)"
            )
    capability = spec.eval.capability.source
    if _is_path(capability, CAPABILITY_NAMES) and not Path(capability).exists():
        raise SpecError(
            f"{origin}: eval.capability.source: no such file or folder {capability!r} "
            f"(expected one of {', '.join(CAPABILITY_NAMES)}, an MMLU-format JSONL, CSV or "
            "parquet file, data:<dataset>/<file> or hf:<dataset>[:<split>])"
        )
    for i, method in enumerate(spec.methods):
        where = f"{origin}: methods[{i}]"
        if method.rubric is not None and not Path(method.rubric).is_file():
            raise SpecError(f"{where}.rubric: no such file {method.rubric!r}")
        scorer = method.scorer
        if scorer is not None and scorer.kind == "reward_model":
            _check_reward_model(str(scorer.path), f"{where}.scorer.path")
        if (
            method.uses_scorer
            and scorer is None
            and not all(b.is_toyworld for b in spec.behaviours)
        ):
            raise SpecError(
                f"{where} ({method.name}) needs a scorer for real-data behaviours "
                "(set scorer: {kind: reward_model, path: ...} or kind: judge/http)"
            )
    for i, model in enumerate(spec.base_models):
        path = model.path
        if path.startswith("/") and not Path(path).exists():
            raise SpecError(f"{origin}: base_models[{i}].path: no such folder {path!r}")


def _check_reward_model(path: str, where: str) -> None:
    """A reward-model path must be a local sequence-classification model folder."""
    import json

    config = Path(path) / "config.json"
    if not config.is_file():
        raise SpecError(f"{where}: no model folder with a config.json at {path!r}")
    try:
        architectures = json.loads(config.read_text()).get("architectures") or []
    except (OSError, json.JSONDecodeError) as error:
        raise SpecError(f"{where}: unreadable {config} ({error})") from None
    if not any(str(a).endswith("ForSequenceClassification") for a in architectures):
        raise SpecError(
            f"{where}: {path!r} is not a sequence-classification model "
            f"(its config names {architectures or 'no architecture'})"
        )


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


def _set(data: Any, item: str) -> None:
    """Apply one ``path.to.field=VALUE`` override (VALUE read as YAML; a number in the
    path indexes a list) to the spec mapping ``data`` in place."""
    path, sep, text = item.partition("=")
    keys = path.strip().split(".")
    if not sep or not all(keys):
        raise SpecError(f"--set {item!r}: expected path.to.field=VALUE")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise SpecError(f"--set {item!r}: VALUE is not YAML ({error})") from None
    node = data
    for depth, key in enumerate(keys):
        where = ".".join(keys[: depth + 1])
        last = depth == len(keys) - 1
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise SpecError(f"--set {item!r}: {where}: no item {key} in a list of {len(node)}")
            index: int | str = int(key)
        elif isinstance(node, dict):
            index = key
            if not last and node.get(key) is None:
                node[key] = {}
        else:
            raise SpecError(f"--set {item!r}: {'.'.join(keys[:depth])} is a value, not a mapping")
        if last:
            node[index] = value
        else:
            node = node[index]


def apply_overrides(data: Any, overrides: Sequence[str]) -> Any:
    """The spec mapping with ``--set`` overrides applied (a copy; the spec then validates
    the result as a whole).

    >>> apply_overrides({"runs": {"seeds": [0]}}, ["runs.seeds=[0, 1]", "runs.training.steps=5"])
    {'runs': {'seeds': [0, 1], 'training': {'steps': 5}}}
    """
    import copy

    if not overrides:
        return data
    if not isinstance(data, dict):
        raise SpecError(f"expected a mapping of spec fields, got {type(data).__name__}")
    data = copy.deepcopy(data)
    for item in overrides:
        _set(data, item)
    return data


def load_spec(path: str | Path, overrides: Sequence[str] = ()) -> StudySpec:
    """Read and validate a YAML study spec, with ``overrides`` (``path.to.field=VALUE``,
    as ``--set`` takes them) applied before it is validated.

    >>> load_spec("missing.yaml")
    Traceback (most recent call last):
    ...
    shiftlab.errors.SpecError: missing.yaml: no such spec file
    """
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: no such spec file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError(f"{path}: cannot read the spec ({error})") from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise SpecError(f"{where}: malformed YAML: {error.problem}") from None
    except yaml.YAMLError as error:
        raise SpecError(f"{path}: malformed YAML: {error}") from None
    data = apply_overrides(data, overrides)
    return parse_spec(data, str(path), path.resolve().parent)
