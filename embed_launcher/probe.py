"""Health probe: is a TEI server answering GET /health with 200? (stdlib only, short timeouts)."""

from __future__ import annotations

import http.client
import urllib.parse


def probe_health(url: str, timeout_s: float) -> bool:
    """True iff ``url`` answers 200 within ``timeout_s``; refused, 503 or a timeout all mean no.

    TEI binds its port only once the model is loaded, so "connection refused" is the normal
    answer while a child starts (tei-contract §5.2).
    """
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout_s)
    try:
        conn.request("GET", parts.path or "/", headers={"Connection": "close"})
        response = conn.getresponse()
        response.read()
        return response.status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()
