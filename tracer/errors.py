"""Errors that reach the user as one line and an exit code, never a traceback."""

from __future__ import annotations


class SkbpathError(Exception):
    """A failure the user can act on.  ``exit_code`` 2 means bad input or setup."""

    exit_code = 2

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class TraceFormatError(SkbpathError):
    """The file is not a readable skbpath trace."""
