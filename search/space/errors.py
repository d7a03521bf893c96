"""The error every bad search-space input raises: it names the file, the field, the rule and the value."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class SpaceError(ValueError):
    """A search space is invalid. ``str(err)`` is one line: ``file: field: rule, got value``."""

    def __init__(self, source: str, field: str, message: str):
        self.source, self.field, self.message = source, field, message
        where = f"{source}: {field}" if field else source
        super().__init__(f"{where}: {message}")


def did_you_mean(key: str, allowed: Iterable[str]) -> str:
    """A ``" (did you mean 'x'?)"`` hint for a misspelt key, or an empty string."""
    close = difflib.get_close_matches(str(key), list(allowed), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
