"""Request deserialisation of the TEI stand-in: serde-like checks with axum's 422 rejection texts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import NoReturn, TypeGuard


class Rejection(Exception):
    """An axum extractor rejection: plain-text body, fixed status."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status, self.text = status, text


def unexpected(value: object) -> str:
    """serde's `Unexpected` wording for a JSON value."""
    if isinstance(value, bool):
        return f"boolean `{'true' if value else 'false'}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{value}`"
    if isinstance(value, str):
        return f'string "{value}"'
    if value is None:
        return "null"
    return "sequence" if isinstance(value, list) else "map"


class Body:
    """One JSON request body being deserialised into a named Rust struct."""

    def __init__(self, raw: object, struct: str, where: str) -> None:
        self.where = where  # " at line L column C", as serde_json appends
        if not isinstance(raw, dict):
            self.fail("", f"invalid type: {unexpected(raw)}, expected struct {struct}")
        self.raw: Mapping[str, object] = raw

    def fail(self, path: str, message: str) -> NoReturn:
        prefix = f"{path}: " if path else ""
        raise Rejection(422, "Failed to deserialize the JSON body into the target type: "
                        f"{prefix}{message}{self.where}")

    def required(self, key: str) -> object:
        if key not in self.raw:
            self.fail("", f"missing field `{key}`")
        return self.raw[key]

    def boolean(self, key: str, default: bool | None) -> bool | None:
        value = self.raw.get(key)
        if value is None and (key not in self.raw or default is None):
            return default
        if not isinstance(value, bool):
            self.fail(key, f"invalid type: {unexpected(value)}, expected a boolean")
        return value

    def string(self, key: str, optional: bool = True) -> str | None:
        value = self.raw.get(key) if optional else self.required(key)
        if value is None and optional:
            return None
        if not isinstance(value, str):
            self.fail(key, f"invalid type: {unexpected(value)}, expected a string")
        return value

    def usize(self, key: str) -> int | None:
        value = self.raw.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"invalid type: {unexpected(value)}, expected usize")
        if value < 0:
            self.fail(key, f"invalid value: integer `{value}`, expected usize")
        return value

    def choice(self, key: str, accepted: Mapping[str, str], default: str) -> str:
        value = self.raw.get(key, default)
        if not isinstance(value, str) or value not in accepted:
            names = [f"`{k}`" for k in accepted if k[0].isupper()] or [f"`{k}`" for k in accepted]
            expected = " or ".join(names) if len(names) == 2 else "one of " + ", ".join(names)
            if isinstance(value, str):
                self.fail(key, f"unknown variant `{value}`, expected {expected}")
            self.fail(key, f"invalid type: {unexpected(value)}, expected enum")
        return accepted[value]

    def string_list(self, key: str) -> list[str]:
        value = self.required(key)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail(key, f"invalid type: {unexpected(value)}, expected a sequence of strings")
        return [str(v) for v in value]

    def inputs(self, key: str) -> tuple[bool, list[str | list[int]]]:
        """TEI's untagged `Input`: (is_batch, items). A flat integer list is ONE token-id input."""
        value = self.required(key)
        if isinstance(value, str) or is_ids(value):
            return False, [_input(value)]
        if isinstance(value, list) and all(isinstance(v, str) or is_ids(v) for v in value):
            return True, [_input(v) for v in value]
        self.fail(key, "data did not match any variant of untagged enum Input")


def _input(value: object) -> str | list[int]:
    return value if isinstance(value, str) else [int(v) for v in value]  # type: ignore[attr-defined]


def is_ids(value: object) -> TypeGuard[list[int]]:
    return isinstance(value, list) and all(
        isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**32 for v in value)


def where_clause(text: str) -> str:
    """serde_json's error position, approximated as the end of the document."""
    lines = text.split("\n")
    return f" at line {len(lines)} column {len(lines[-1])}"


def parse_json(body: bytes) -> object:
    """axum's `Json` body parsing: syntax errors are a 400 plain-text rejection."""
    import json
    text = body.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        what = "EOF while parsing a value" if err.pos >= len(text.rstrip()) else "expected value"
        raise Rejection(400, "Failed to parse the request body as JSON: "
                        f"{what} at line {err.lineno} column {err.colno}") from None


def is_json_content_type(value: str | None) -> bool:
    """axum accepts `application/json` and `application/*+json`, parameters allowed."""
    if not value:
        return False
    mime = value.split(";", 1)[0].strip().lower()
    kind, _, sub = mime.partition("/")
    return kind == "application" and (sub == "json" or sub.endswith("+json"))

