"""The advertised address for banners: given, or looked up beside start-up in at most a few seconds."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable

LOOKUP_URLS = ("https://ipv4.icanhazip.com", "https://api.ipify.org")
LOOKUP_BUDGET_S = 3.0
UNKNOWN = "<server ip>"


def fetch_text(url: str, timeout_s: float) -> str:
    """GET ``url`` and return its body as text."""
    import urllib.request  # lazy: it loads ssl, which a supervisor with a given address never needs

    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return str(response.read(64).decode("ascii", "replace"))


def parse_ipv4(text: str) -> str | None:
    """A single strict dotted-quad line, or None (the original's rule)."""
    text = text.strip()
    if "\n" in text:
        return None
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        return None


class AddressLookup:
    """Looks up the public IPv4 address in a daemon thread; never delays start-up.

    Skipped entirely (no thread, no network) when an address is given or in local-only mode.
    """

    def __init__(
        self,
        given: str | None,
        *,
        enabled: bool,
        fallback: str = UNKNOWN,
        fetch: Callable[[str, float], str] = fetch_text,
        on_found: Callable[[str], None] = lambda addr: None,
        warn: Callable[[str], None] = lambda line: None,
    ) -> None:
        self.result: str | None = given
        self.fallback = fallback
        self._fetch = fetch
        self._on_found = on_found
        self._warn = warn
        self._thread: threading.Thread | None = None
        if given is None and enabled:
            self._thread = threading.Thread(target=self._lookup, name="address-lookup", daemon=True)

    def start(self) -> None:
        """Begin the lookup, if there is one to do."""
        if self._thread is not None:
            self._thread.start()

    def _lookup(self) -> None:
        per_try = LOOKUP_BUDGET_S / len(LOOKUP_URLS)
        for url in LOOKUP_URLS:
            try:
                found = parse_ipv4(self._fetch(url, per_try))
            except (OSError, ValueError):
                continue
            if found:
                self.result = found
                try:
                    self._on_found(found)
                except OSError as exc:  # a full or read-only data volume: the address stays known in memory
                    where = exc.filename or "the server address"
                    self._warn(f"Warning: cannot write {where} ({exc.strerror or exc}); serving continues")
                return

    def join(self, timeout_s: float) -> None:
        """Wait for the lookup to end (tests)."""
        if self._thread is not None:
            self._thread.join(timeout_s)

    @property
    def address(self) -> str:
        """The best address known right now."""
        return self.result or self.fallback
