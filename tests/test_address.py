"""The advertised address: given wins, local-only never looks anything up, a lookup never blocks start-up."""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable

from embed_launcher.startup.address import UNKNOWN, AddressLookup, parse_ipv4


def recorder(calls: list[str]) -> Callable[[str, float], str]:
    """A fetch that only records the URLs it was asked for."""

    def fetch(url: str, timeout: float) -> str:
        calls.append(url)
        return ""

    return fetch


def test_given_address_skips_the_lookup() -> None:
    """EMBED_SERVER_ADDR set: no thread, no network, the given value is shown."""
    calls: list[str] = []
    lookup = AddressLookup("emb.example.org", enabled=True, fetch=recorder(calls))
    lookup.start()
    lookup.join(1.0)
    assert lookup.address == "emb.example.org" and calls == []


def test_local_only_makes_no_network_call() -> None:
    """Local-only mode: the lookup is disabled and the fallback is shown."""
    calls: list[str] = []
    lookup = AddressLookup(None, enabled=False, fallback="host1", fetch=recorder(calls))
    lookup.start()
    lookup.join(1.0)
    assert lookup.address == "host1" and calls == []


def test_lookup_runs_in_the_background_and_reports_the_address() -> None:
    """The first service that answers a strict dotted quad wins; the callback persists it."""
    release = threading.Event()
    found: list[str] = []

    def fetch(url: str, timeout: float) -> str:
        release.wait(5)
        return "not an ip" if "icanhazip" in url else "203.0.113.9\n"

    lookup = AddressLookup(None, enabled=True, fetch=fetch, on_found=found.append)
    lookup.start()
    assert lookup.address == UNKNOWN  # start-up does not wait for it
    release.set()
    lookup.join(5.0)
    assert lookup.address == "203.0.113.9" and found == ["203.0.113.9"]


def test_failing_lookup_keeps_the_fallback() -> None:
    """Offline: every service fails; the banner shows the fallback."""

    def fetch(url: str, timeout: float) -> str:
        raise OSError("no route")

    lookup = AddressLookup(None, enabled=True, fallback="<server ip>", fetch=fetch)
    lookup.start()
    lookup.join(5.0)
    assert lookup.address == "<server ip>"


def test_only_a_single_strict_dotted_quad_is_accepted() -> None:
    """The original's rule for the reply."""
    assert parse_ipv4(" 198.51.100.4\n") == "198.51.100.4"
    assert parse_ipv4("198.51.100.4\n1.2.3.4") is None
    assert parse_ipv4("<html>") is None
    assert parse_ipv4("999.1.1.1") is None


def test_a_full_disk_when_saving_the_address_is_one_warning_not_a_thread_traceback() -> None:
    """The lookup ends after start-up, in its own thread: a failed write of .server_addr (ENOSPC, EROFS)
    warns once, naming the file, and the address is still used."""
    warnings: list[str] = []
    crashes: list[threading.ExceptHookArgs] = []

    def full(addr: str) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/.server_addr")

    previous, threading.excepthook = threading.excepthook, crashes.append
    try:
        lookup = AddressLookup(None, enabled=True, fetch=lambda url, timeout: "203.0.113.9", on_found=full,
                               warn=warnings.append)
        lookup.start()
        lookup.join(5.0)
    finally:
        threading.excepthook = previous
    assert crashes == []
    assert warnings == ["Warning: cannot write /data/.server_addr (No space left on device); serving continues"]
    assert lookup.address == "203.0.113.9"
