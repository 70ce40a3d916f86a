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


def os_reason(exc: OSError) -> str:
    """Why a file operation failed, in the words a user acts on (the machine's fault, not the recipe's)."""
    import errno

    words = {
        errno.ENOSPC: "no space left on device",
        errno.EDQUOT: "disk quota exceeded",
        errno.EROFS: "read-only file system",
        errno.EPERM: "operation not permitted (is the file immutable? lsattr shows it; chattr -i clears it)",
        errno.EACCES: "permission denied",
    }
    return words.get(exc.errno or 0) or exc.strerror or type(exc).__name__
