"""How workers share the study's jobs: grouped by base model (one load each) and claimed one
organism at a time; the base model a worker keeps resident."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from shiftlab._hashing import content_hash
from shiftlab._workers import (
    claim_each,
)
from shiftlab.models import load_causal_lm
from shiftlab.spec import (
    BaseModelSpec,
)
from shiftlab.store import Store
from shiftlab.study._jobs import OrganismJob

T = TypeVar("T")


def grouped(items: Iterable[T], key: Callable[[T], str]) -> dict[str, list[T]]:
    """Items by key, in first-seen order (jobs sharing a base model or an organism)."""
    groups: dict[str, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return groups


def in_base_order(jobs: Iterable[T], base: Callable[[T], BaseModelSpec]) -> list[T]:
    """Jobs grouped by base model (first-seen order), so a worker loads each base once."""
    return [j for group in grouped(jobs, lambda j: base(j).name).values() for j in group]


def claim_by_organism(
    store: Store,
    kind: str,
    jobs: list[T],
    organism: Callable[[T], OrganismJob],
    artefact_id: Callable[[T], str],
    build: Callable[[str, list[T]], None],
) -> None:
    """Build ``jobs`` (artefacts of ``kind``) with one claim per organism: an organism's
    jobs share its loaded adapter, and ``build(organism_id, jobs)`` gets them together."""
    groups = grouped(
        in_base_order(jobs, lambda j: organism(j).base), lambda j: organism(j).artefact_id
    )
    claim_each(
        groups.items(),
        lock=lambda group: store.lock(kind, group[0]),
        finished=lambda group: all(store.is_finished(kind, artefact_id(j)) for j in group[1]),
        build=lambda group: build(*group),
    )


def load_base(base: BaseModelSpec) -> tuple[Any, Any]:
    return load_causal_lm(
        base.path,
        revision=base.revision,
        gguf_file=base.gguf_file,
        dtype=base.dtype,
        trust_remote_code=base.trust_remote_code,
    )


class ResidentBase:
    """The base model a worker holds; another is loaded only when a job needs it."""

    def __init__(self) -> None:
        self._name: str | None = None
        self._loaded: tuple[Any, Any] | None = None

    def get(self, base: BaseModelSpec) -> tuple[Any, Any]:
        # The whole spec, not the name: two studies may give one name to different bases.
        key = content_hash(base.model_dump())
        if self._loaded is None or self._name != key:
            self._loaded = None  # let the old base go before the next one loads
            self._loaded = load_base(base)
            self._name = key
        return self._loaded
