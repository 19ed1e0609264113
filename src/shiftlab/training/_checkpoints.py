"""Training checkpoints that cannot run code: tensors in safetensors, the rest in JSON.

A checkpoint folder ``checkpoint-<step>`` holds ``tensors.safetensors`` (the trainable
parameters, the optimiser's moment tensors, torch's RNG states) and ``state.json`` (the
run's fingerprint, the step, the optimiser's and scheduler's scalars, Python's and
NumPy's RNG states, and the log so far). Nothing is unpickled on load, so a store that
others can write to cannot plant code in a worker; the fingerprint is read (from JSON)
and checked before any tensor is.

>>> import torch
>>> state = {"step": torch.tensor(3.0), "betas": (0.9, 0.999), 7: [1, None]}
>>> tensors: dict = {}
>>> encoded = encode_state(state, "opt", tensors)
>>> decode_state(encoded, tensors) == state
True
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shiftlab._files import naming_full_disk, publish_dir, temporary_sibling
from shiftlab.errors import StoreError

TENSORS = "tensors.safetensors"
STATE = "state.json"
CHECKPOINT_FORMAT = 1


def encode_state(value: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    """``value`` as JSON, its tensors moved into ``tensors`` (``key`` names the value in errors).

    Tuples, integer-keyed dicts and NumPy arrays are tagged so :func:`decode_state`
    rebuilds exactly what was saved (optimiser and RNG states hold all three).
    """
    if isinstance(value, torch.Tensor):
        name = f"t{len(tensors)}"  # numbered, so no two paths can collide
        tensors[name] = value.detach().cpu().clone().contiguous()
        return {"__tensor__": name}
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return {"__tuple__": [encode_state(v, f"{key}.{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [encode_state(v, f"{key}.{i}", tensors) for i, v in enumerate(value)]
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: encode_state(v, f"{key}.{k}", tensors) for k, v in value.items()}
        return {
            "__items__": [[k, encode_state(v, f"{key}.{k}", tensors)] for k, v in value.items()]
        }
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"{key}: cannot checkpoint a {type(value).__name__}")


def decode_state(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of :func:`encode_state`."""
    if isinstance(value, list):
        return [decode_state(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if "__ndarray__" in value:
        return np.asarray(value["__ndarray__"], dtype=value["dtype"])
    if "__tuple__" in value:
        return tuple(decode_state(v, tensors) for v in value["__tuple__"])
    if "__items__" in value:
        return {k: decode_state(v, tensors) for k, v in value["__items__"]}
    return {k: decode_state(v, tensors) for k, v in value.items()}


def rng_state() -> dict[str, Any]:
    """torch's, Python's and NumPy's random states (and CUDA's where present)."""
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(folder: Path, step: int, state: dict[str, Any], fingerprint: str) -> None:
    """Write ``checkpoint-<step>`` atomically (fsynced, then renamed); drop older ones."""
    from safetensors.torch import save_file

    final = folder / f"checkpoint-{step:08d}"
    tmp = temporary_sibling(final)
    tensors: dict[str, torch.Tensor] = {}
    encoded = encode_state(state, "state", tensors)
    document = {
        "format": CHECKPOINT_FORMAT,
        "fingerprint": fingerprint,
        "step": step,
        "state": encoded,
    }
    with naming_full_disk(final):
        try:
            tmp.mkdir(parents=True)
            save_file(tensors, str(tmp / TENSORS))
            (tmp / STATE).write_text(json.dumps(document))
            publish_dir(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    for old in folder.glob("checkpoint-*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(folder: Path | None) -> Path | None:
    """The newest finished ``checkpoint-*`` in ``folder``, if any."""
    if folder is None or not folder.is_dir():
        return None
    found = sorted(p for p in folder.glob("checkpoint-*") if p.is_dir())
    return found[-1] if found else None


def load_checkpoint(checkpoint: Path, fingerprint: str) -> tuple[int, dict[str, Any]]:
    """(step, state) saved by :func:`save_checkpoint`, after checking it belongs to the run
    with ``fingerprint``. A damaged, foreign or old-format checkpoint is a
    :class:`StoreError` naming the file; nothing in it is executed."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    document_path = checkpoint / STATE
    if not document_path.is_file():
        raise StoreError(
            f"{checkpoint}: no {STATE} (a checkpoint from an older shiftlab, which pickled "
            f"its state, is not read); delete {checkpoint.parent} to train from the start"
        )
    try:
        document = json.loads(document_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise StoreError(f"{document_path}: unreadable checkpoint state ({error})") from None
    if not isinstance(document, dict) or document.get("format") != CHECKPOINT_FORMAT:
        raise StoreError(f"{document_path}: not a shiftlab checkpoint (format {CHECKPOINT_FORMAT})")
    if document.get("fingerprint") != fingerprint:
        raise StoreError(
            f"{checkpoint}: checkpoint of a different run (settings, seed or data differ); "
            f"delete {checkpoint.parent} or use another checkpoint folder"
        )
    try:
        tensors = load_file(str(checkpoint / TENSORS))
        state = decode_state(document["state"], tensors)
    except (OSError, SafetensorError, KeyError, TypeError, ValueError) as error:
        raise StoreError(
            f"{checkpoint / TENSORS}: unreadable checkpoint tensors ({error})"
        ) from None
    return int(document["step"]), state


def clear_checkpoints(folder: Path) -> None:
    """Remove every checkpoint (and half-written one) of a finished run."""
    for old in (*folder.glob("checkpoint-*"), *folder.glob(".tmp-checkpoint-*")):
        shutil.rmtree(old, ignore_errors=True)
    with contextlib.suppress(OSError):  # the caller's folder, if it holds nothing else
        folder.rmdir()
