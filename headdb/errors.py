"""Errors a user can cause and fix.

The CLI prints a `UserError` as one line and exits with code 2; anything else is a bug and
keeps its traceback.
"""


class UserError(Exception):
    """A mistake the user can fix; the CLI prints it as one line and exits 2."""


class WarehouseLocked(UserError):
    """Another process held the warehouse's write lock for longer than the wait allowed."""
