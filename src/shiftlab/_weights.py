"""Model folders are read as safetensors only: a pickle in a folder must never run.

``torch.load`` of a ``.bin``/``.pt`` file unpickles it, which can execute anything; a
store or model folder that several people can write to would then run their code in
every worker. Every loader checks its folder with :func:`require_safetensors` first and
passes ``use_safetensors=True`` to ``transformers``.

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> _ = (folder / "pytorch_model.bin").write_bytes(b"")
>>> require_safetensors(folder, "model")
Traceback (most recent call last):
...
shiftlab.errors.ModelError: model .../pytorch_model.bin: only pickled weights, which...
"""

from __future__ import annotations

from pathlib import Path

from shiftlab.errors import ModelError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def require_safetensors(folder: str | Path, what: str) -> None:
    """Raise :class:`ModelError` when a local ``folder`` holds weights only as pickles.

    Folders without any weight file (a hub id, a GGUF-only folder) are left to the loader.
    """
    root = Path(folder)
    if not root.is_dir() or any(root.glob("*.safetensors")):
        return
    pickled = sorted(p for p in root.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickled:
        raise ModelError(
            f"{what} {pickled[0]}: only pickled weights, which... pickle "
            "can run code); convert them to safetensors where you trust the file, e.g. "
            "save_pretrained(folder, safe_serialization=True)"
        )
