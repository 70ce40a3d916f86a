"""The one error type for mistakes a user can cause or fix."""

from __future__ import annotations


class BuildError(Exception):
    """An error the user can act on. Printed as one line; never with a traceback.

    ``where`` names the file (and line or key) the problem is in, when there is one.
    """

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None) -> None:
        self.message = message
        self.where = where
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.hint:
            text += f" ({self.hint})"
        return text


class RecipeError(BuildError):
    """A recipe, variable file or config that is malformed or inconsistent."""
