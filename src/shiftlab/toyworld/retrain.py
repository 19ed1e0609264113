"""Retrain the shipped toyworld base weights: ``python -m shiftlab.toyworld.retrain [size]``.

Run it after editing ``data/toyworld/world.yaml`` or the recipe, then commit the new file.
"""

from __future__ import annotations

import sys

from shiftlab.toyworld._base_model import TOYWORLD_SIZES, save_shipped_weights, train_base_model


def main(argv: list[str]) -> int:
    sizes = argv or list(TOYWORLD_SIZES)
    for size in sizes:
        model, _ = train_base_model(size)
        print(f"wrote {save_shipped_weights(model, size)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
