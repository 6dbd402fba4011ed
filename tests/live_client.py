"""A client's view of a running launcher, shared by the end-to-end tests and the benchmarks.

One POST answered by its status code (0 when no answer came), one `/v1/embeddings` call, the live status
the launcher publishes (`.status.json` in its data directory), and `Load`: client threads sending requests
back to back and keeping every answer's status. Standard library only, so the benchmarks (which put
tests/ on sys.path) use the same helpers as the tests that check the same behaviour.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import wait_until


def post(port: int, path: str, body: object, *, key: str | None = None, timeout_s: float = 30.0) -> int:
    """POST ``body`` as JSON to 127.0.0.1:``port``; the answer's status, 0 if none came (refused, reset, timed out)."""
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                     headers=headers, method="POST")  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def embed(port: int, model: str | None, texts: str | list[str] = "hello", *, key: str | None = None,
          timeout_s: float = 30.0) -> int:
    """One `/v1/embeddings` request for ``texts`` (``model`` left out when None: the gateway's default)."""
    body: dict[str, object] = {"input": texts}
    if model is not None:
        body["model"] = model
    return post(port, "/v1/embeddings", body, key=key, timeout_s=timeout_s)


def live_status(data_dir: Path) -> dict[str, Any]:
    """The live status the launcher publishes in ``data_dir``; {} before its first write."""
    try:
        return dict(json.loads((data_dir / ".status.json").read_text()))
    except (OSError, ValueError):
        return {}


def live_services(data_dir: Path) -> dict[str, dict[str, Any]]:
    """The live status's services, by name; {} before its first write."""
    return dict(live_status(data_dir).get("services", {}))


class Load:
    """``threads`` clients calling ``send`` back to back until closed; every status it returns is kept in order.

    Use as a context manager (or `start` and `close`) so the threads always stop.
    """

    def __init__(self, send: Callable[[], int], threads: int = 2) -> None:
        self.send = send
        self.answers: list[int] = []  # list.append is atomic: the threads share it without a lock
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]

    def run(self) -> None:
        while not self.stop.is_set():
            self.answers.append(self.send())

    @property
    def ok(self) -> int:
        return self.answers.count(200)

    @property
    def failed(self) -> list[int]:
        """The answers that were not 200, in order (0: no answer)."""
        return [status for status in self.answers if status != 200]

    def more(self, n: int = 20, timeout_s: float = 20.0) -> None:
        """Wait until ``n`` more requests succeeded."""
        target = self.ok + n
        wait_until(lambda: self.ok >= target, timeout_s)

    def start(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def __enter__(self) -> Load:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()
