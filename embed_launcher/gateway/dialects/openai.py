"""OpenAI's dialect: model entries, and token-id inputs under EMBED_TOKEN_INPUT (pure).

OpenAI's embeddings take token ids as well as text, and `langchain-openai`'s OpenAIEmbeddings sends
tiktoken's ids by default. TEI reads an integer list as ids of *its own* tokenizer, so passing those on
embeds the wrong tokens without any error. What the gateway does with ids is a configured policy
(EMBED_TOKEN_INPUT, ``TOKEN_POLICIES``), never a guess from the numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from embed_launcher.gateway.config import ModelRoute
from embed_launcher.gateway.shapes import RequestError

TIKTOKEN_ENCODING = "cl100k_base"  # what langchain-openai and the openai cookbook fall back to for other models
REJECT_MESSAGE = (
    "`input` holds token ids, and this server will not guess whose: TEI would read them as ids of its own "
    "tokenizer and embed the wrong tokens without an error. Send text instead: in LangChain, "
    "OpenAIEmbeddings(..., check_embedding_ctx_length=False); in other clients, turn off client-side "
    "tokenization. Or have the server decode tiktoken ids (EMBED_TOKEN_INPUT=decode), or pass the model's own "
    "ids through (EMBED_TOKEN_INPUT=passthrough).")


def has_token_ids(value: Any) -> bool:
    """Whether an OpenAI `input` is one token-id list or a batch holding any."""
    if not isinstance(value, list) or not value:
        return False
    return _ids(value) or any(isinstance(item, list) and item and _ids(item) for item in value)


def _ids(items: list[Any]) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) for v in items)


def decoded_input(value: Any, decode: Callable[[Sequence[int]], str]) -> Any:
    """``value`` with every token-id list turned into its text."""
    if _ids(value):
        return decode(value)
    return [decode(item) if isinstance(item, list) else item for item in value]


def token_rejection() -> RequestError:
    return RequestError(400, REJECT_MESSAGE, "token_ids_not_accepted")


def model_entry(model: ModelRoute, asked: str, created: int, facts: dict[str, Any] | None = None) -> dict[str, Any]:
    """One `/v1/models` entry: OpenAI's fields plus what clients size themselves by: `kind`, the other names,
    and (once the model's server told) `dimensions`, `max_input_length`, `matryoshka_dimensions`."""
    owner = model.name.split("/", 1)[0] if "/" in model.name else "embed-launcher"
    entry: dict[str, Any] = {"id": asked, "object": "model", "created": created, "owned_by": owner,
                             "kind": model.kind, "aliases": list(model.aliases)}
    entry.update(facts or {})
    if model.matryoshka_dimensions:
        entry["matryoshka_dimensions"] = list(model.matryoshka_dimensions)
    return entry


def model_list(models: Sequence[ModelRoute], created: int,
               facts: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    facts = facts or {}
    return {"object": "list", "data": [model_entry(m, m.name, created, facts.get(m.name)) for m in models]}
