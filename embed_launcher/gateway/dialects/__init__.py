"""The APIs the gateway speaks, one module each (pure: no sockets, no aiohttp).

Each dialect reads its requests into one internal call (``EmbedCall``: the model asked for, the texts,
TEI's options) and shapes TEI's answers and errors into its own API's shapes. The handler
(gateway/handlers.py) does the talking to TEI; the route table (gateway/routes.py) says which dialect a
path speaks. Adding a dialect is one module here, one handler action and its table rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class EmbedCall:
    """One embedding request, whatever its dialect: what TEI's /embed needs, and what the answer needs."""

    model: str | None  # the name the client asked for; None: the route's default model
    texts: tuple[str, ...]
    truncate: bool | None = None  # None: TEI's own default (--auto-truncate)
    direction: str = "Right"  # TEI's truncation_direction
    prompt_name: str | None = None
    dimensions: int | None = None
    warnings: tuple[str, ...] = field(default=())  # what the answer must say the gateway did differently

    def tei_body(self, texts: list[str] | None = None, prompt: bool = True) -> dict[str, Any]:
        """TEI's /embed body for ``texts`` (default: all), normalised as TEI does by default."""
        body: dict[str, Any] = {"inputs": list(self.texts if texts is None else texts), "normalize": True}
        if self.truncate is not None:
            body["truncate"] = self.truncate
            body["truncation_direction"] = self.direction
        if prompt and self.prompt_name is not None:
            body["prompt_name"] = self.prompt_name
        if self.dimensions is not None:
            body["dimensions"] = self.dimensions
        return body
