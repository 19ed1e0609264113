"""Run a notebook headless with parameters, the papermill way, on nbclient.

A notebook's parameters are the assignments in its cell tagged ``parameters``; their
values there are the defaults. :func:`execute_notebook` checks the parameters it is given
against those defaults (a name the notebook does not have, or a value of another type, is
an error before any cell runs), inserts a cell tagged ``injected-parameters`` after the
parameters cell and executes every cell in a fresh kernel.

>>> import nbformat, tempfile, pathlib
>>> nb = nbformat.v4.new_notebook()
>>> nb.cells = [nbformat.v4.new_code_cell("steps = 3", metadata={"tags": ["parameters"]})]
>>> path = pathlib.Path(tempfile.mkdtemp()) / "n.ipynb"
>>> nbformat.write(nb, path)
>>> notebook_parameters(path)
{'steps': 3}
>>> execute_notebook(path, parameters={"steps": "three"})
Traceback (most recent call last):
...
shiftlab.errors.SpecError: ...: parameter steps: expected int (the default is 3), got str 'three'
"""

from __future__ import annotations

import ast
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from shiftlab.errors import NotebookError, ShiftlabError, SpecError
from shiftlab.store import atomic_write_bytes

PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"


def _read(path: Path) -> Any:
    try:
        import nbclient  # noqa: F401
        import nbformat
    except ImportError:
        raise ShiftlabError(
            "running notebooks needs nbclient, nbformat and ipykernel: "
            "pip install 'shiftlab[notebooks]'"
        ) from None
    if not path.is_file():
        raise SpecError(f"{path}: no such notebook")
    try:
        return nbformat.read(path, as_version=4)
    except Exception as error:  # nbformat raises several unrelated types on bad JSON
        raise SpecError(f"{path}: not a readable notebook ({error})") from None


def _parameters_cell(notebook: Any, path: Path) -> int:
    for index, cell in enumerate(notebook.cells):
        if PARAMETERS_TAG in cell.get("metadata", {}).get("tags", []):
            return index
    raise SpecError(f"{path}: no cell is tagged '{PARAMETERS_TAG}'; it takes no parameters")


def notebook_parameters(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The parameters a notebook takes and their defaults (literal assignments only)."""
    path = Path(path)
    notebook = _read(path)
    cell = notebook.cells[_parameters_cell(notebook, path)]
    found: dict[str, Any] = {}
    for node in ast.parse(cell.source).body:
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    try:
                        found[target.id] = ast.literal_eval(node.value)
                    except ValueError:
                        raise SpecError(
                            f"{path}: parameter {target.id} (line {node.lineno} of the "
                            "parameters cell) must be a literal"
                        ) from None
    return found


def _accepts(default: Any, value: Any) -> bool:
    if default is None:
        return True
    if value is None:
        return False
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, int | float)
    return isinstance(value, type(default))


def check_parameters(path: str | os.PathLike[str], parameters: dict[str, Any]) -> None:
    """Raise :class:`SpecError` for a parameter the notebook lacks or of the wrong type."""
    defaults = notebook_parameters(path)
    for name, value in parameters.items():
        if name not in defaults:
            known = ", ".join(sorted(defaults)) or "none"
            raise SpecError(f"{path}: no parameter {name!r}; it takes {known}")
        if not _accepts(defaults[name], value):
            raise SpecError(
                f"{path}: parameter {name}: expected {type(defaults[name]).__name__} "
                f"(the default is {defaults[name]!r}), got {type(value).__name__} {value!r}"
            )


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _short_error(error: Exception, lines: int = 12) -> str:
    """The end of a cell's error (its traceback's last lines), without terminal colours."""
    text = _ANSI.sub("", str(error)).strip().splitlines()
    return "\n".join(text[-lines:])


def execute_notebook(
    path: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    parameters: dict[str, Any] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: int = 1800,
    kernel_name: str = "python3",
) -> Any:
    """Execute the notebook at ``path`` with ``parameters`` and return it, executed.

    Cells run in a fresh ``kernel_name`` kernel with ``cwd`` (default: the notebook's
    folder) as working directory; each may take ``timeout`` seconds. The executed
    notebook is written to ``output`` when given; when a cell raises, it is still
    written, executed up to that cell and with its error (as papermill does), and the
    failure becomes a :class:`NotebookError` with the end of its traceback. Relative paths
    inside the notebook are relative to ``cwd``, as in Jupyter. On POSIX the kernel talks
    over IPC sockets in a private temporary folder, not TCP.
    """
    path = Path(path)
    parameters = dict(parameters or {})
    if parameters:
        check_parameters(path, parameters)
    notebook = _read(path)
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    # Parameters injected by an earlier run would override this run's: drop them.
    notebook.cells = [
        c for c in notebook.cells if INJECTED_TAG not in c.get("metadata", {}).get("tags", [])
    ]
    if parameters:
        source = "# Injected parameters\n" + "\n".join(
            f"{name} = {value!r}" for name, value in parameters.items()
        )
        cell = nbformat.v4.new_code_cell(source, metadata={"tags": [INJECTED_TAG]})
        notebook.cells.insert(_parameters_cell(notebook, path) + 1, cell)
    with tempfile.TemporaryDirectory(prefix="shiftlab-kernel-") as sockets:
        client = NotebookClient(
            notebook,
            timeout=timeout,
            kernel_name=kernel_name,
            resources={"metadata": {"path": str(Path(cwd) if cwd else path.parent)}},
            **_kernel_config(Path(sockets)),
        )
        # Figures display inline even when the caller draws off screen (MPLBACKEND=Agg).
        env = {**os.environ, "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
        try:
            client.execute(env=env)
        except CellExecutionError as error:
            written = _write(notebook, output)
            where = f" (executed up to it: {written})" if written else ""
            raise NotebookError(
                f"{path}: a cell failed{where}:\n{_short_error(error)}", written
            ) from None
    _write(notebook, output)
    return notebook


def _write(notebook: Any, output: str | os.PathLike[str] | None) -> Path | None:
    import nbformat

    if output is None:
        return None
    atomic_write_bytes(Path(output), nbformat.writes(notebook).encode())
    return Path(output)


def _kernel_config(sockets: Path) -> dict[str, Any]:
    """Kernels on IPC sockets under ``sockets`` (POSIX), so the kernel neither listens on
    TCP nor warns that it does; the default (TCP) elsewhere."""
    if os.name != "posix":
        return {}
    from traitlets.config import Config

    return {"config": Config({"KernelManager": {"transport": "ipc", "ip": str(sockets / "k")}})}
