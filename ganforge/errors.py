"""User-facing errors.

Every mistake a user can make (a misspelled name, a wrong value, a missing file) raises a
:class:`GanforgeError` whose message says what is wrong and how to fix it. The CLI prints it as
one line, without a traceback.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class GanforgeError(Exception):
    """An error caused by the user's input; its message is meant to be read by that user."""


class ConfigError(GanforgeError):
    """A recipe or command-line override is wrong."""


class UnknownNameError(GanforgeError):
    """A generator, discriminator, loss, dataset, ... name that no plugin registered."""


class PluginError(GanforgeError):
    """A plugin broke the contract (duplicate name, failed import, API mismatch)."""


class DatasetError(GanforgeError):
    """Dataset files are missing or malformed."""


class CheckpointError(GanforgeError):
    """A checkpoint is missing, truncated, corrupted or does not fit the recipe."""


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """Return " Did you mean 'x'?" when ``name`` is close to one of ``known``, else ""."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""
