"""What a manifest records about the machine and the installation an artefact was built on.

Bit-for-bit reproduction holds only on the same device, the same CPU class (float
kernels differ between ISA levels: an AVX-512 machine and an AVX2 one sum in other
orders) and the same package versions; :func:`environment_info` records all three, so
``repro check`` can say which comparisons it may make exactly.

>>> info = environment_info()
>>> sorted(info["hardware"]["cpu_class"])
['isa', 'vendor']
"""

from __future__ import annotations

import functools
import os
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from shiftlab._hashing import file_hash

LOCK_FILE = "requirements.lock"
_PACKAGES = ("torch", "transformers", "peft", "tokenizers", "polars", "numpy", "pydantic")
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._\-]*)==([^\s;#]+)")


def _git_revision() -> dict[str, Any]:
    source = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(source), "status", "--porcelain"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"revision": None, "dirty": None}
    return {"revision": rev, "dirty": bool(dirty)}


def _cpu_vendor() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith(("vendor_id", "CPU implementer")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


@functools.lru_cache(maxsize=1)
def cpu_class() -> dict[str, str]:
    """The CPU's vendor and the ISA level torch's kernels use (``AVX512``, ``AVX2``, ...).

    >>> set(cpu_class()) == {"vendor", "isa"}
    True
    """
    import torch

    return {"vendor": _cpu_vendor(), "isa": str(torch.backends.cpu.get_cpu_capability())}


def lock_path() -> Path | None:
    """The lock this installation came from: the checkout's, or the copy inside a wheel."""
    here = Path(__file__).resolve()
    for candidate in (here.parents[2] / LOCK_FILE, here.parent / "_data" / LOCK_FILE):
        if candidate.is_file():
            return candidate
    return None


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@functools.lru_cache(maxsize=1)
def lock_info() -> dict[str, Any]:
    """The lock's sha256 and the installed packages whose version differs from it.

    A manifest that names a lock is only as good as the environment's agreement with it,
    so the deviations are recorded too (empty when the venv came from ``make venv``).
    """
    path = lock_path()
    if path is None:
        return {"sha256": None, "deviations": None}
    deviations = []
    for line in path.read_text(encoding="utf-8").splitlines():
        pinned = _PIN.match(line.strip())
        if pinned is None:
            continue
        name, version = pinned.groups()
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed is None or _normalise(installed) != _normalise(version):
            deviations.append(f"{name}=={installed or 'missing'} (lock {version})")
    return {"sha256": file_hash(path, 64), "deviations": deviations}


@functools.lru_cache(maxsize=1)
def environment_info() -> dict[str, Any]:
    """shiftlab version, git revision, package versions, the lock, and hardware (with the
    CPU class), computed once per process."""
    import torch

    from shiftlab._version import __version__

    packages: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    hardware: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_class": cpu_class(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return {
        "shiftlab_version": __version__,
        "git": _git_revision(),
        "packages": packages,
        "lock": lock_info(),
        "hardware": hardware,
    }
