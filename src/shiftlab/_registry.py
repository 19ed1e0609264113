"""Named implementations that higher floors provide to lower ones.

A lower floor (models, behaviours) owns a :class:`Registry` and looks names up in it; a
higher floor (toyworld) registers itself when imported. Built-in providers are named by
module, so looking one up imports it: the lower floor knows a provider's *name*, never
its code, and the import graph keeps pointing down.

>>> sizes = Registry("greeting", builtin={})
>>> sizes.register("hello", "world")
>>> sizes.get("hello"), sizes.get("bye")
('world', None)
"""

from __future__ import annotations

import importlib
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> provider table; ``builtin`` maps names to the module that registers them."""

    def __init__(self, what: str, *, builtin: dict[str, str]) -> None:
        self.what = what
        self._builtin = dict(builtin)
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T) -> None:
        """Provide ``item`` under ``name`` (a provider registering twice replaces itself)."""
        self._items[name] = item

    def get(self, name: str) -> T | None:
        """The provider of ``name``, importing its built-in module first if need be."""
        if name not in self._items and name in self._builtin:
            importlib.import_module(self._builtin[name])
        return self._items.get(name)

    def names(self) -> list[str]:
        """Every name that can be looked up, built-in ones included."""
        return sorted({*self._items, *self._builtin})
