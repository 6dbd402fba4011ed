"""Typed access to the merged configuration values, collecting every problem instead of raising (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from embed_launcher.config.kinds import Kind
from embed_launcher.config.variables import VARIABLES

T = TypeVar("T")

DEFAULTS = {v.name: v.default for v in VARIABLES}


class Reader:
    """Typed access to the merged, sanitised values; collects problems instead of raising."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = values
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.bad: set[str] = set()  # variables whose value was rejected (their default is used)

    def given(self, name: str) -> bool:
        """Whether the user set a non-empty value (empty means "use the default")."""
        return bool(self.values.get(name))

    def optional(self, name: str, kind: Kind[T], default: str | None = None) -> T | None:
        """The parsed value, else the parsed default (declared unless given); None if unset."""
        default = DEFAULTS[name] if default is None else default
        raw = self.values.get(name) or default
        if not raw:
            return None
        value = kind.parse(raw)
        if value is None:
            self.bad.add(name)
            self.problems.append(f"{name} must be {kind.rule}; got '{raw}'.")
            return kind.parse(default) if default else None
        return value

    def required(self, name: str, kind: Kind[T], default: str | None = None) -> T:
        """Like optional() for a variable that always has a (valid) default."""
        value = self.optional(name, kind, default)
        assert value is not None, f"{name} has no valid default"
        return value
