"""TEI's answer to the client: whole or streamed, within the write deadline; a broken stream is cut, never patched."""

from __future__ import annotations

import asyncio
import json

import aiohttp
from aiohttp import web

from embed_launcher.gateway import logs, shapes
from embed_launcher.gateway.requestid import HEADER
from embed_launcher.gateway.upstream import Reply

JSON = "application/json"
TAIL_BYTES = 4096  # the end of an OpenAI answer that holds `"model":…` (after the data)
ERROR_BYTES = 64 * 1024  # an error body read whole to be reshaped (TEI's are a line)
MODEL_KEY = b'"model":'
DECODER = json.JSONDecoder()


def cut(request: web.BaseRequest) -> None:
    """Reset the client's connection: once a status line is out, a failure can only end the connection.

    aiohttp then finds the transport closing when it finishes the response, and drops the connection
    quietly (no second status line written inside the first answer's body).
    """
    transport = request.transport
    if transport is not None:
        transport.abort()


SMALL_BYTES = 64 * 1024  # an answer this small goes into the socket's buffer at once: nothing to wait for


async def send(request: web.BaseRequest, response: web.StreamResponse, timeout_s: float) -> web.StreamResponse:
    """Write a whole answer now, within ``timeout_s``: a client that does not read it loses its connection.

    A small answer is left to aiohttp (its write never waits; an unread one sits in the buffer until
    the idle timeout closes the connection): a deadline per request costs throughput."""
    if response.prepared or (isinstance(response, web.Response) and (response.content_length or 0) <= SMALL_BYTES):
        return response
    try:
        async with asyncio.timeout(timeout_s):
            await response.prepare(request)
            await response.write_eof()
    except TimeoutError:
        cut(request)
    except ConnectionError:
        pass  # the client left; aiohttp ends the connection
    return response


async def relay(request: web.BaseRequest, reply: Reply, *, openai: bool, timeout_s: float,
                rename: str | None = None) -> web.StreamResponse:
    """TEI's answer as it is (status, body, content type, TEI's `x-` headers); on OpenAI and Cohere
    routes a TEI error becomes OpenAI's JSON error shape (TEI's own are flat, or plain text)."""
    headers = {k: v for k, v in reply.headers.items() if k.lower().startswith("x-") and k.lower() != "x-request-id"}
    log = logs.CURRENT.get()
    if log is not None:  # set here too: a streamed answer's head goes out before the dispatcher sees it
        headers[HEADER] = log.id
    content_type = reply.headers.get("content-type")
    if content_type:
        headers["Content-Type"] = content_type
    if openai and reply.status >= 400:
        raw = reply.body if reply.body is not None else await read_error(reply)
        if not shapes.is_openai_error(raw):
            raw = shapes.reshape_tei_error(reply.status, raw)
        headers["Content-Type"] = JSON
        return web.Response(status=reply.status, body=raw, headers=headers)
    if reply.body is not None:
        body = rename_model(reply.body, rename) if rename else reply.body
        return web.Response(status=reply.status, body=body, headers=headers)
    return await stream(request, reply, headers, rename, timeout_s)


async def read_error(reply: Reply) -> bytes:
    assert reply.response is not None
    try:
        return await reply.response.content.read(ERROR_BYTES)
    except aiohttp.ClientError:
        return b""
    finally:
        reply.response.release()


async def stream(request: web.BaseRequest, reply: Reply, headers: dict[str, str], rename: str | None,
                 timeout_s: float) -> web.StreamResponse:
    """A large answer, chunk by chunk. Once the status line is out, an upstream failure (TEI died
    mid-answer) or a client that stops reading cuts the client's connection: a truncated body the
    client can detect, never a second response inside the first one's body."""
    assert reply.response is not None
    out = web.StreamResponse(status=reply.status, headers=headers)
    if rename is None and reply.response.content_length is not None:
        out.content_length = reply.response.content_length
    sent = 0
    try:
        async with asyncio.timeout(timeout_s):
            await out.prepare(request)
        tail = b""
        async for chunk in reply.response.content.iter_chunked(1 << 16):
            if rename is not None:
                tail += chunk
                chunk, tail = tail[:-TAIL_BYTES], tail[-TAIL_BYTES:]
            async with asyncio.timeout(timeout_s):
                await out.write(chunk)
            sent += len(chunk)
        async with asyncio.timeout(timeout_s):
            await out.write(rename_model(tail, rename) if rename else b"")
            await out.write_eof()
    except (aiohttp.ClientError, TimeoutError) as exc:
        logs.say_about_request(f"Error: {request.method} {request.path}: the answer was cut after {sent} bytes "
                               f"({type(exc).__name__}); the client's connection was closed")
        cut(request)
    finally:
        reply.response.release()
    return out


def rename_model(body: bytes, asked: str) -> bytes:
    """The last `"model":"…"` of an OpenAI answer set to ``asked`` (it follows the data, so it is in the tail)."""
    at = body.rfind(MODEL_KEY)
    if at < 0:
        return body
    tail = body[at + len(MODEL_KEY):].decode("utf-8", "replace")
    start = len(tail) - len(tail.lstrip())
    if not tail[start:].startswith('"'):
        return body
    value, end = DECODER.raw_decode(tail, start)
    if value == asked:
        return body
    return body[:at] + MODEL_KEY + json.dumps(asked, ensure_ascii=False).encode() + tail[end:].encode()
