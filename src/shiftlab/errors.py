"""The errors shiftlab raises for bad input.

Every error a user can cause is a :class:`ShiftlabError`; the CLI prints its message on
one line and exits with status 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class ShiftlabError(Exception):
    """Bad input or an unusable environment, described in one line."""


class SpecError(ShiftlabError):
    """A study spec that is missing, malformed or invalid."""


class StoreError(ShiftlabError):
    """A store that cannot be used (unwritable, corrupt, bad artefact id)."""


class DamagedFile(StoreError):
    """A file in a store that is not what was written: truncated, overwritten or unreadable.

    ``path`` is the damaged file.
    """

    def __init__(self, message: str, path: object = None) -> None:
        super().__init__(message)
        self.path = path

    def __reduce__(self) -> tuple[type[DamagedFile], tuple[str, object]]:
        # Workers send their errors back pickled; keep the path.
        return (type(self), (str(self), self.path))


class OutOfSpace(StoreError):
    """A write that failed because the file system holding it is full."""


class DataError(ShiftlabError):
    """A data file that cannot be read (names the file and line)."""


class ModelError(ShiftlabError):
    """A model that cannot be found or loaded."""


class NotebookError(ShiftlabError):
    """A notebook cell raised while the notebook was executed.

    Not bad input: the CLI exits with status 1 (bad input is 2). ``output`` is the
    executed notebook written up to the failing cell, with its error, when one was asked for.
    """

    def __init__(self, message: str, output: object = None) -> None:
        super().__init__(message)
        self.output = output

    def __reduce__(self) -> tuple[type[NotebookError], tuple[str, object]]:
        return (type(self), (str(self), self.output))


class Terminated(BaseException):
    """SIGTERM arrived: unwind (releasing leases, keeping finished artefacts) and stop.

    A ``BaseException``, like ``KeyboardInterrupt``, so ``except Exception`` never
    swallows it.
    """
