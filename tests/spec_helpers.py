"""Helpers shared by the spec and pipeline tests."""

from __future__ import annotations


def changed(data: dict, path: list, value: object) -> dict:
    """A deep copy of a spec mapping with the entry at ``path`` set to ``value``."""
    import copy

    data = copy.deepcopy(data)
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return data
