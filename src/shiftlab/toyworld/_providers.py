"""toyworld provides itself to the floors below it: its base models as the ``toyworld:``
model source, its suites as the ``toyworld`` suite source."""

from __future__ import annotations

from pathlib import Path

from shiftlab.behaviours import SUITE_SOURCES
from shiftlab.errors import ModelError
from shiftlab.models import MODEL_SOURCES
from shiftlab.toyworld._base_model import TOYWORLD_SIZES, base_recipe_hash, toyworld_model_dir
from shiftlab.toyworld._suites import build_toyworld_suite


class ToyworldModels:
    """``toyworld:<size>``: the zoo of toyworld bases (shipped or trained on first use)."""

    def check(self, name: str) -> None:
        if name not in TOYWORLD_SIZES:
            raise ModelError(
                f"unknown toyworld model 'toyworld:{name}'; expected "
                f"toyworld:{{{','.join(TOYWORLD_SIZES)}}}"
            )

    def identity(self, name: str) -> str:
        return f"toyworld:{name}@{base_recipe_hash(name)}"

    def folder(self, name: str) -> Path:
        return toyworld_model_dir(name)


MODEL_SOURCES.register("toyworld", ToyworldModels())
SUITE_SOURCES.register("toyworld", build_toyworld_suite)
