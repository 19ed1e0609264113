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


# A one-organism toyworld study small enough to build in seconds: one label method, two
# arms with a run (full, shuffled) and the no-training control.
TINY_STUDY = {
    "base_models": [{"name": "toy", "path": "toyworld:small"}],
    "behaviours": [
        {
            "name": "sycophancy",
            # Half the induction targets misbehave, so the organism's candidates differ and
            # selection has something to choose between.
            "toyworld": {
                "n_induction": 128,
                "n_consistency": 12,
                "n_pairs": 8,
                "n_eval": 16,
                "induced_rate": 0.5,
            },
            "induction": {"steps": 30, "learning_rate": 1e-2},
        }
    ],
    "organisms": {"seeds": [0]},
    "methods": [{"name": "self_confidence", "n_candidates": 3, "k_values": []}],
    "arms": ["full", "shuffled", "none"],
    "runs": {"seeds": [0], "training": {"steps": 4, "batch_size": 4}},
    "eval": {"max_new_tokens": 8},
    "shift": {"n_permutations": 200},
}
