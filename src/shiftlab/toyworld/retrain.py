"""Retrain shipped toyworld weights: ``python -m shiftlab.toyworld.retrain [name ...]``.

Names are base models (``small``, ``medium-instruct``, ...) and ``reward``; no name retrains
all of them.

Run it after editing ``data/toyworld/world.yaml`` or the recipe, then commit the new file.
"""

from __future__ import annotations

import sys

from shiftlab.toyworld._base_model import TOYWORLD_SIZES, save_shipped_weights, train_base_model
from shiftlab.toyworld._reward_model import save_shipped_reward_model, train_reward_model


def main(argv: list[str]) -> int:
    for name in argv or [*TOYWORLD_SIZES, "reward"]:
        if name == "reward":
            print(f"wrote {save_shipped_reward_model(train_reward_model()[0])}")
        else:
            print(f"wrote {save_shipped_weights(train_base_model(name)[0], name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
