"""The committed lock pins every package `make venv` installs, and `make venv` uses it."""

import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._\-]*)==(\S+)$")


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _pins() -> dict[str, str]:
    pins = {}
    for number, line in enumerate((ROOT / "requirements.lock").read_text().splitlines(), 1):
        if not line or line.startswith("#"):
            continue
        found = PIN.match(line)
        assert found, f"requirements.lock:{number}: {line!r} is not a name==version pin"
        pins[found.group(1).lower().replace("_", "-")] = found.group(2)
    return pins


def test_every_dependency_and_model_wheel_is_pinned():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    dev = re.search(r"shiftlab\[(.*)\]", " ".join(extras["dev"]))
    assert dev, "dev installs shiftlab's own extras"
    wanted = [*project["dependencies"], *extras["dev"]]
    wanted += [r for extra in dev.group(1).split(",") for r in extras[extra]]
    pins = _pins()
    missing = {_name(r) for r in wanted if not r.startswith("shiftlab")} - set(pins)
    assert not missing, f"not in requirements.lock (run `make lock`): {sorted(missing)}"
    makefile = (ROOT / "Makefile").read_text()
    wheels = re.search(r"^MODEL_WHEELS := (.*)$", makefile, re.M)
    assert wheels
    for wheel in wheels.group(1).split():
        name, version = wheel.split("==")
        assert pins.get(name) == version, f"{wheel} is not what the lock pins"
    assert pins["torch"].split("+")[0] == "2.13.0"


def test_make_venv_installs_within_the_lock():
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("$(VENV)/.installed:", 1)[1].split("\n\n", 1)[0]
    installs = [line for line in recipe.splitlines() if "$(PIP)" in line]
    assert installs and all("-c $(LOCK)" in line for line in installs)
    assert "$(LOCK)" in recipe.splitlines()[0]  # a new lock rebuilds the venv
    assert "make test" in (ROOT / ".ci" / "run").read_text()
