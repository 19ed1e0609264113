"""A study run into a small file system that fills up: one line naming the path and the
free space (exit 2), nothing damaged or half-written left, and a rerun with space
finishes the study.

The file system is a tmpfs mounted in a private mount namespace (``unshare``), so the
test needs root or unprivileged user namespaces; elsewhere it is skipped.
"""

import json
import shutil
import subprocess
import sys
import textwrap

import pytest

from spec_helpers import TINY_STUDY

DRIVER = textwrap.dedent(
    """
    import contextlib, io, json, os, subprocess, sys
    from pathlib import Path

    from shiftlab._integrity import inspect_store
    from shiftlab.cli import main
    from shiftlab.store import Store

    spec, mount, budget = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], check=True)
    filler = mount / "filler"
    free = os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize
    filler.write_bytes(bytes(free - budget))
    store = mount / "store"

    def run():
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(["run", spec, "--store", str(store), "--no-progress", "--workers", "1"])
        return code, err.getvalue()

    def state():
        found = inspect_store(Store.open(store), hashes=True)
        return {"damage": [d.line for d in found.damage],
                "temporaries": [str(p) for p in store.rglob(".tmp-*")]}

    full_code, full_err = run()
    full = state()
    filler.unlink()
    again_code, again_err = run()
    print(json.dumps({"full": [full_code, full_err, full], "again": [again_code, again_err],
                      "after": state(), "mount": str(mount)}))
    """
)


def _namespace() -> list[str] | None:
    """How to run a command in a private mount namespace where it may mount, or None."""
    if shutil.which("unshare") is None:
        return None
    for command in (["unshare", "-m"], ["unshare", "-rm"]):
        probe = subprocess.run([*command, "true"], capture_output=True)
        if probe.returncode == 0:
            return command
    return None


@pytest.mark.slow
# Free space left at the start: the study stops at an organism, at a run or near the end.
@pytest.mark.parametrize("budget_kib", [120, 600, 1000])
def test_a_study_that_fills_the_disk_says_so_and_resumes(tmp_path, budget_kib):
    namespace = _namespace()
    if namespace is None:
        pytest.skip("no private mount namespace here (needs root or user namespaces)")
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(TINY_STUDY))
    mount = tmp_path / "small"
    mount.mkdir()
    result = subprocess.run(
        [*namespace, sys.executable, "-c", DRIVER, str(spec), str(mount), str(budget_kib << 10)],
        capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    if result.returncode != 0 and "mount" in result.stderr and "permission" in result.stderr:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()[-200:]}")
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    code, err, state = found["full"]
    last = err.strip().splitlines()[-1]
    assert code == 2 and "Traceback" not in err, err
    assert last.startswith(f"shiftlab: error: {mount}/store") and " free on " in last, err
    assert ": no space left on the device (" in last
    assert state == {"damage": [], "temporaries": []}  # nothing damaged or half-written
    code, err = found["again"]
    assert code == 0, err
    assert found["after"] == {"damage": [], "temporaries": []}
