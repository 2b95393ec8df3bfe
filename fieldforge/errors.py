"""User-facing errors: the CLI prints their message on one line and exits non-zero."""

from __future__ import annotations

from pathlib import Path


class FieldforgeError(Exception):
    """An error caused by the user's input (a file, a flag); printed without a traceback."""


class DataError(FieldforgeError):
    """A dataset file is missing, unreadable or inconsistent. The message names the file."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")
