"""Reading YAML for the space schema: a reader that names the file in every error, bounded reprs, unique keys.

No torch import. :class:`Reader` is what every ``_parse_*`` function of :mod:`search.space.schema`
validates with, so an error always reads ``<file>: <field path>: <rule>, got <value>``.
"""

from __future__ import annotations

import reprlib
from typing import Any

import yaml

from search.space.errors import SpaceError, did_you_mean


class Reader:
    """Validation helpers that know the file name, so every error names it."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, field: str, message: str) -> SpaceError:
        return SpaceError(self.source, field, message)

    def mapping(self, value: Any, field: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(field, f"must be a mapping, got {type(value).__name__} {short(value)}")
        for key in value:
            if key not in allowed:
                shown = short(key)[1:-1] if isinstance(key, str) else short(key)  # bounded, control chars escaped
                raise self.fail(f"{field}.{shown}" if field else shown,
                                f"unknown key, allowed: {list(allowed)}{did_you_mean(key, allowed)}")
        return value

    def integer(self, value: Any, field: str, lo: int, hi: int) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise self.fail(field, f"must be an integer in [{lo}, {hi}], got {short(value)}")
        return value

    def choice(self, value: Any, field: str, allowed: tuple[Any, ...]) -> Any:
        # The type must match too: 3.0 == 3 and True == 1, but neither is a kernel size.
        if type(value) not in {type(a) for a in allowed} or value not in allowed:
            raise self.fail(field, f"must be one of {list(allowed)}, got {short(value)}")
        return value

    def choices(self, value: Any, field: str, check: Any) -> tuple[Any, ...]:
        """A non-empty list (a scalar is a one-element list) of unique values, each passed through ``check``."""
        items = value if isinstance(value, list) else [value]
        if not items:
            raise self.fail(field, "must list at least one choice, got []")
        out = tuple(check(v, f"{field}[{i}]") for i, v in enumerate(items))
        if len(set(out)) != len(out):
            raise self.fail(field, f"choices must be unique, got {short(value)}")
        return out


def _bounded_repr() -> reprlib.Repr:
    r = reprlib.Repr()
    r.maxlevel, r.maxstring, r.maxother = 3, 60, 60
    return r


_REPR = _bounded_repr()


def short(value: Any) -> str:
    """A repr of at most 60 characters that never walks the whole value.

    A YAML alias bomb is a few hundred bytes as a file but gigabytes as a full ``repr``.
    """
    text = _REPR.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that rejects a key given twice in one mapping.

    PyYAML keeps the last one silently, so a repeated stage would drop the first. Keys merged in
    with ``<<: *anchor`` may still be overridden: the check runs on the mapping as written.
    """

    def compose_mapping_node(self, anchor: Any) -> yaml.MappingNode:
        node = super().compose_mapping_node(anchor)
        seen: set[tuple[str, str]] = set()
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                if (key.tag, key.value) in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key.value!r}",
                                                            key.start_mark)
                seen.add((key.tag, key.value))
        return node
