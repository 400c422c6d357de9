"""Exceptions that mean "the user gave bad input", as opposed to bugs.

The CLI prints a :class:`UserError` as one line on stderr and exits with code 2; anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: a missing file, a malformed mapping, a store that is not a store.

    The message names the input and the problem in one line, e.g.
    ``"mapping.yaml: unknown unit 'percnt' for us_accuracy (expected fraction, percent, error)"``.
    """


class StoreLockedError(UserError):
    """Another writer holds the store's lock for longer than the timeout."""


class StoreDamagedError(UserError):
    """A file the store's manifest lists is missing, truncated or unreadable.

    The message names the file and says what to do: ``meta-study store check STORE`` lists every
    damaged file, ``--repair`` sets them aside and drops them from the store.
    """
